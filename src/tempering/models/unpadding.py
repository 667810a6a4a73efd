"""Running a padded batch's per-token layers on its real tokens only ("unpadding").

Projections, feed-forward layers and norms treat every position alike, so on a batch of
mixed lengths they can run on the (N, D) real tokens alone and leave the padding out;
only attention needs the (B, T) rectangle, and gets it by scattering its inputs back
(`TokenIndex.pad`) and gathering its output (`TokenIndex.unpad`). Real positions get the
values the padded forward gives them; padding positions come back as zeros. This is what
varlen attention kernels do on a GPU; here attention itself stays SDPA over the
rectangle, which keeps one code path for CPU and GPU. Finding the real tokens is one
`nonzero` per forward (a host sync on a GPU).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenIndex(NamedTuple):
    """Where a padded (B, T) batch's real tokens sit: their flat positions in B·T, row-major."""

    flat: torch.Tensor  # (N,) int64
    batch: int
    seq_len: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> TokenIndex:
        """The index of the non-zeros of a (B, T) mask (1 or True on tokens, 0 on padding)."""
        return cls(attention_mask.flatten().nonzero().squeeze(1), *attention_mask.shape)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, ...) real-token rows → (B, T, ...), zeros at padding."""
        full = rows.new_zeros((self.batch * self.seq_len, *rows.shape[1:]))
        return full.index_copy(0, self.flat, rows).view(self.batch, self.seq_len, *rows.shape[1:])

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) → (N, ...) rows of the real tokens."""
        return padded.flatten(0, 1).index_select(0, self.flat)

    def positions(self) -> torch.Tensor:
        """(N,) position of each real token within its row."""
        return self.flat % self.seq_len


def padded_if(index: TokenIndex | None, rows: torch.Tensor) -> torch.Tensor:
    """`index.pad(rows)`, or `rows` unchanged when there is no index (the batch was not unpadded)."""
    return rows if index is None else index.pad(rows)


def unpadded_if(index: TokenIndex | None, padded: torch.Tensor) -> torch.Tensor:
    """`index.unpad(padded)`, or `padded` unchanged when there is no index."""
    return padded if index is None else index.unpad(padded)


def unpadding_index(padding_mask: torch.Tensor | None, kv_cache: object | None) -> TokenIndex | None:
    """The TokenIndex of a decoder forward's `padding_mask`, or None without one; refused with a KV cache."""
    if padding_mask is None:
        return None
    if kv_cache is not None:
        raise ValueError("padding_mask (unpadded training) cannot be combined with a KV cache")
    return TokenIndex.of(padding_mask)

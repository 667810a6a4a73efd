"""Bidirectional pre-norm transformer blocks over padded sequences, with an optional convolution module.

The speech families share them: the audio encoder runs them over subsampled mel frames, the
Talker over its text tokens and over mel frames. Positions are rotary (no length limit to
declare; tables are made for each call's length); padding is a key mask, so a padded
position never feeds a real one. With `conv_kernel` > 0 each block also holds a Conformer-style
convolution module (pointwise + GLU, depthwise convolution, norm, SiLU, pointwise) between
attention and MLP: local context that small speech models learn much faster with. The norm
there is RMSNorm, not Conformer's BatchNorm, so an utterance's output never depends on the
others in its batch. Attention, SwiGLU and RMSNorm are the decoder's (models/layers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tempering.models.layers import Attention, RMSNorm, SwiGLU, rotary_tables

INIT_STD = 0.02


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True at real positions (index < length)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, T) boolean attention mask, True on real keys: valid whatever dtype autocast gives the queries."""
    return mask[:, None, None, :]


class ConvolutionModule(nn.Module):
    """Conformer convolution: pointwise (2D) + GLU, depthwise conv over time, RMSNorm, SiLU, pointwise."""

    def __init__(self, d_model: int, kernel: int, eps: float):
        super().__init__()
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.norm = RMSNorm(d_model, eps)
        self.pointwise_out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); padded frames are zeroed before the convolution reads them."""
        h = F.glu(self.pointwise_in(x), dim=-1) * mask[..., None]  # (B, T, D)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # (B, D, T) conv over time, back to (B, T, D)
        return self.pointwise_out(F.silu(self.norm(h)))


class EncoderBlock(nn.Module):
    """x + attn(norm(x)), [x + conv(norm(x))], x + mlp(norm(x)) — no causal mask."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, conv_kernel: int, eps: float, dropout: float):
        super().__init__()
        self.self_attn = Attention(d_model, n_heads, n_heads, dropout)
        self.mlp = SwiGLU(d_model, d_ff)
        self.input_layernorm = RMSNorm(d_model, eps)
        self.post_attention_layernorm = RMSNorm(d_model, eps)
        if conv_kernel:
            self.conv_layernorm = RMSNorm(d_model, eps)
            self.conv = ConvolutionModule(d_model, conv_kernel, eps)
        else:
            self.conv = None
        self.dropout = dropout

    def forward(self, x, cos, sin, attn_bias, mask):
        """Apply the block to (B, T, D) with padding `mask` (B, T)."""
        x = x + self._drop(self.self_attn(self.input_layernorm(x), cos, sin, attn_bias, False))
        if self.conv is not None:
            x = x + self._drop(self.conv(self.conv_layernorm(x), mask))
        return x + self._drop(self.mlp(self.post_attention_layernorm(x)))

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(h, self.dropout, self.training) if self.dropout else h


class SequenceEncoder(nn.Module):
    """A stack of EncoderBlocks and a final RMSNorm over (B, T, D) with per-row lengths."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, d_ff: int, *, conv_kernel: int = 0,
                 rope_theta: float = 10000.0, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, conv_kernel=conv_kernel, eps=eps,
                                                 dropout=dropout) for _ in range(n_layers))
        self.norm = RMSNorm(d_model, eps)
        self.head_dim = d_model // n_heads
        self.rope_theta = rope_theta
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) inputs and (B, T) bool padding mask -> (B, T, D) normed outputs (padding zeroed)."""
        cos, sin = rotary_tables(self.head_dim, x.shape[1], self.rope_theta)
        cos, sin = cos.to(x.device), sin.to(x.device)
        bias = key_padding_mask(mask)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if checkpointing:
                x = checkpoint(layer, x, cos, sin, bias, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, bias, mask)
        return self.norm(x) * mask[..., None]


@torch.no_grad()
def init_encoder_weights(module: nn.Module, n_layers: int) -> None:
    """Linear and embedding weights ~ N(0, 0.02), biases 0, norms 1; residual-writing projections scaled by depth."""
    for child in module.modules():
        if isinstance(child, (nn.Linear, nn.Embedding)):
            nn.init.normal_(child.weight, mean=0.0, std=INIT_STD)
            if getattr(child, "bias", None) is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, RMSNorm):
            nn.init.ones_(child.weight)
    out_std = INIT_STD / (2 * max(n_layers, 1)) ** 0.5
    for child in module.modules():
        if isinstance(child, EncoderBlock):
            nn.init.normal_(child.self_attn.o_proj.weight, mean=0.0, std=out_std)
            nn.init.normal_(child.mlp.down_proj.weight, mean=0.0, std=out_std)
            if child.conv is not None:
                nn.init.normal_(child.conv.pointwise_out.weight, mean=0.0, std=out_std)

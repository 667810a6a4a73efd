"""The layers of a Llama-style decoder: RMSNorm, rotary embeddings, attention, SwiGLU.

Written by hand because each is a few lines over torch primitives
(`F.rms_norm`, `F.scaled_dot_product_attention`) and the parameter names and
numerics must match Hugging Face Llama exactly, so weights move both ways with
no renaming or permutation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tempering.models.unpadding import TokenIndex, padded_if, unpadded_if

# `enable_gqa` arrived in torch 2.5; it lets SDPA read shared K/V heads without copying.
# SDPA is a builtin without an inspectable signature, so read it from the docstring's first
# line. The repeat fallback can go once the project requires torch>=2.5.
_SDPA_HAS_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "").split("->")[0]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Return the dtype matmuls on `x` run in: autocast's when it is on, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """Return the dtype attention runs in: compute_dtype, except fp32 for bf16 on CPU.

    PyTorch's CPU flash-attention kernel is slower in bf16 than in fp32 at small head
    sizes (forward + backward, head_dim 32: 17.8 against 14.6 ms with the casts, torch
    2.13), and fp32 softmax is also the more accurate one.
    """
    dtype = compute_dtype(x)
    return torch.float32 if dtype == torch.bfloat16 and x.device.type == "cpu" else dtype


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (HF `LlamaRMSNorm` numerics)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Low-precision input: normalise in fp32, cast, then scale — HF's order of rounding.
        normed = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_tables(head_dim: int, num_positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return fp32 (cos, sin) tables of shape (num_positions, head_dim) in HF's half-split layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    positions = torch.arange(num_positions, dtype=torch.int64).float()
    freqs = positions[:, None] * inv_freq[None, :]  # (P, hd/2), same products as HF computes
    angles = torch.cat((freqs, freqs), dim=-1)  # (P, hd)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, hd) by (…, T, hd) cos/sin using HF's `rotate_half` convention."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions and an optional KV cache."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, dropout: float = 0.0, *,
                 head_dim: int | None = None, bias: bool = False, out_bias: bool = False,
                 qk_norm_eps: float | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim or d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=out_bias)
        # Qwen3: RMSNorm over each query and key head, before the rotation.
        if qk_norm_eps is not None:
            self.q_norm = RMSNorm(self.head_dim, qk_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, qk_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_bias: torch.Tensor | None,
        is_causal: bool,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        index: TokenIndex | None = None,
    ) -> torch.Tensor:
        """Attend (B, T, D) -> (B, T, D); `attn_bias` is additive (B|1, 1, T, S) or None.

        With `index`, `x` is the (N, D) real tokens of a padded batch (`models/unpadding.py`):
        the projections run on them alone and only SDPA sees the (B, T) rectangle.
        """
        batch, seq_len = x.shape[:2] if index is None else (index.batch, index.seq_len)
        x = x.to(compute_dtype(x))  # under autocast: cast once, not once per projection
        # (B, T, H*hd) -> (B, T, H, hd) -> (B, H, T, hd)
        q = padded_if(index, self.q_proj(x)).view(batch, seq_len, self.n_heads, self.head_dim)
        k = padded_if(index, self.k_proj(x)).view(batch, seq_len, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = padded_if(index, self.v_proj(x)).view(batch, seq_len, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)  # (B, KV, S, hd), S = cached + T
        projection_dtype, attn_dtype = q.dtype, attention_dtype(x)
        if attn_dtype != projection_dtype:
            # Autocast would cast SDPA's inputs straight back to bf16.
            with torch.autocast(x.device.type, enabled=False):
                out = self._sdpa(q.to(attn_dtype), k.to(attn_dtype), v.to(attn_dtype), attn_bias, is_causal)
            out = out.to(projection_dtype)  # (B, H, T, hd)
        else:
            out = self._sdpa(q, k, v, attn_bias, is_causal)  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(batch, seq_len, self.n_heads * self.head_dim)
        return self.o_proj(unpadded_if(index, out))

    def _sdpa(self, q, k, v, attn_bias, is_causal):
        dropout_p = self.dropout if self.training else 0.0
        if self.n_kv_heads == self.n_heads:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, is_causal=is_causal)
        if _SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, is_causal=is_causal,
                enable_gqa=True)
        k, v = (repeat_kv_heads(t, self.n_heads // self.n_kv_heads) for t in (k, v))
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, is_causal=is_causal)


def repeat_kv_heads(x: torch.Tensor, num_repeats: int) -> torch.Tensor:
    """Expand (B, KV, S, hd) to (B, KV*num_repeats, S, hd), each KV head serving adjacent Q heads."""
    batch, n_kv, seq_len, head_dim = x.shape
    x = x[:, :, None].expand(batch, n_kv, num_repeats, seq_len, head_dim)
    return x.reshape(batch, n_kv * num_repeats, seq_len, head_dim)


class SwiGLU(nn.Module):
    """Gated MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(compute_dtype(x))  # under autocast: cast once, not once per projection
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class KVCache:
    """Preallocated per-layer keys and values for incremental decoding.

    `length` is a Python int (host state, no device sync): the number of positions
    already written. The model advances it after each forward. Under autocast, give
    the autocast dtype so cached keys are not cast back and forth every step.
    """

    def __init__(self, num_layers: int, batch_size: int, n_kv_heads: int, max_len: int,
                 head_dim: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Write (B, KV, T, hd) at the current length; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.keys[layer_idx][:, :, self.length:end] = k
        self.values[layer_idx][:, :, self.length:end] = v
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, num_positions: int) -> None:
        """Mark `num_positions` more positions as written (after every layer wrote them)."""
        self.length += num_positions

    def reset(self) -> None:
        """Forget every cached position (the buffers are reused)."""
        self.length = 0


def residual_std(base_std: float, num_layers: int) -> float:
    """Std for projections that write into the residual stream (see DecoderLM.init_weights)."""
    return base_std / math.sqrt(2 * num_layers)

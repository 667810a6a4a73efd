"""The Llama-style decoder LM, with Hugging Face `LlamaForCausalLM` parameter names (and Qwen2/Qwen3's extras).

Packed sequences: pass `document_ids` (B, T); a document is a contiguous run of
equal ids. Each token then attends only to earlier tokens of its own document, and
positions restart at 0 per document. That mask costs B*T*T work and takes SDPA off
its causal fast path, so the contract is: pass `document_ids=None` whenever no row
holds more than one document (pretraining by default, or a batch with no boundary —
`needs_document_mask` decides that on the host, free on the collator's CPU tensor).
The model never inspects tensor values, so its forward has no host syncs and
compiles to one graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tempering.models.layers import (
    Attention,
    KVCache,
    RMSNorm,
    SwiGLU,
    attention_dtype,
    residual_std,
    rotary_tables,
)
from tempering.models.llama.architecture import Architecture
from tempering.models.unpadding import padded_if, unpadded_if, unpadding_index

INIT_STD = 0.02


def positions_from_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """Return (B, T) positions that restart at 0 wherever the document id changes."""
    seq_len = document_ids.shape[1]
    index = torch.arange(seq_len, device=document_ids.device).expand_as(document_ids)
    is_start = torch.ones_like(document_ids, dtype=torch.bool)
    is_start[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    # Each token's document starts at the latest start index at or before it.
    starts = torch.where(is_start, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - starts


def document_attention_bias(document_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return an additive (B, 1, T, T) mask: 0 where a token may attend, -inf elsewhere.

    A token attends to itself and earlier tokens of the same contiguous document.
    Additive float rather than bool: SDPA on CPU converts a bool mask on every call
    (forward and backward, every layer), which measured ~2x slower.
    """
    seq_len = document_ids.shape[1]
    index = torch.arange(seq_len, device=document_ids.device)
    starts = index - positions_from_documents(document_ids)  # (B, T) first index of own document
    keys = index.view(1, 1, seq_len)
    allowed = (keys <= index.view(1, seq_len, 1)) & (keys >= starts.unsqueeze(-1))  # (B, T, T)
    zero = torch.zeros((), dtype=dtype, device=document_ids.device)
    blocked = torch.full((), float("-inf"), dtype=dtype, device=document_ids.device)
    return torch.where(allowed, zero, blocked).unsqueeze(1)


def needs_document_mask(document_ids: torch.Tensor) -> bool:
    """Tell (on the host) whether any row holds more than one document; call it on CPU tensors."""
    return bool((document_ids[:, 1:] != document_ids[:, :-1]).any())


def rotary_for_positions(rope_cos: torch.Tensor, rope_sin: torch.Tensor, position_ids: torch.Tensor | None,
                         start: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return cos/sin broadcastable to (B, H, T, hd): at `position_ids`, else at start..start+seq_len."""
    if position_ids is not None:
        # (B, T) -> (B, 1, T, hd)
        return rope_cos[position_ids].unsqueeze(1), rope_sin[position_ids].unsqueeze(1)
    end = start + seq_len
    if end > rope_cos.shape[0]:
        raise ValueError(f"position {end - 1} is past max_seq_len {rope_cos.shape[0]}")
    return rope_cos[start:end], rope_sin[start:end]  # (T, hd)


def attention_mask_for(document_ids: torch.Tensor | None, kv_cache: KVCache | None, seq_len: int,
                       x: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
    """Return (additive bias or None, is_causal) for a forward over `seq_len` new positions."""
    if document_ids is not None:
        return document_attention_bias(document_ids, attention_dtype(x)), False
    if kv_cache is None or kv_cache.length == 0:
        return None, True
    if seq_len == 1:  # one new token sees every cached position
        return None, False
    # Chunk after a cached prefix: query i (absolute start+i) sees keys 0..start+i.
    # SDPA's is_causal aligns top-left for non-square shapes, so build it explicitly.
    start = kv_cache.length
    allowed = torch.ones(seq_len, start + seq_len, dtype=torch.bool, device=x.device).tril(start)
    zero = torch.zeros((), dtype=attention_dtype(x), device=x.device)
    return torch.where(allowed, zero, torch.full_like(zero, float("-inf"))), False


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, arch: Architecture, dropout: float):
        super().__init__()
        self.self_attn = Attention(arch.d_model, arch.n_heads, arch.n_kv_heads, dropout, head_dim=arch.head_dim,
                                   bias=arch.attention_bias, out_bias=arch.attention_out_bias,
                                   qk_norm_eps=arch.norm_eps if arch.qk_norm else None)
        self.mlp = SwiGLU(arch.d_model, arch.d_ff)
        self.input_layernorm = RMSNorm(arch.d_model, arch.norm_eps)
        self.post_attention_layernorm = RMSNorm(arch.d_model, arch.norm_eps)
        self.dropout = dropout

    def forward(self, x, cos, sin, attn_bias, is_causal, kv_cache=None, layer_idx=0, index=None):
        """Apply the block to (B, T, D), or to the (N, D) real tokens of a padded batch given `index`."""
        h = self.self_attn(self.input_layernorm(x), cos, sin, attn_bias, is_causal, kv_cache, layer_idx, index)
        x = x + self._drop(h)
        return x + self._drop(self.mlp(self.post_attention_layernorm(x)))

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(h, self.dropout, self.training) if self.dropout else h


class DecoderBackbone(nn.Module):
    """Container for the `model.` half of the HF names: embeddings, blocks, final norm."""

    def __init__(self, arch: Architecture, dropout: float):
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.d_model)
        self.layers = nn.ModuleList(DecoderBlock(arch, dropout) for _ in range(arch.n_layers))
        self.norm = RMSNorm(arch.d_model, arch.norm_eps)
        # Not saved (HF recomputes them too); fp32 at build, cast with the module if it is.
        cos, sin = rotary_tables(arch.head_dim, arch.max_seq_len, arch.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)


class DecoderLM(nn.Module):
    """Llama-style decoder LM; `state_dict()` keys equal those of the HF class of `arch.hf_model_type`."""

    def __init__(self, arch: Architecture, dropout: float = 0.0):
        super().__init__()
        arch.check()
        self.arch = arch
        self.model = DecoderBackbone(arch, dropout)
        self.lm_head = nn.Linear(arch.d_model, arch.vocab_size, bias=False)
        if arch.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.gradient_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every weight (also usable after building on the meta device).

        Linear and embedding weights ~ normal(0, 0.02). The two projections per block
        that write into the residual stream (o_proj, down_proj) get 0.02/sqrt(2*n_layers):
        the stream is a sum of 2*n_layers such branch outputs, so this keeps its variance
        at init roughly independent of depth (GPT-2's scheme).
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        out_std = residual_std(INIT_STD, self.arch.n_layers)
        for layer in self.model.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, mean=0.0, std=out_std)
            nn.init.normal_(layer.mlp.down_proj.weight, mean=0.0, std=out_std)
        cos, sin = rotary_tables(self.arch.head_dim, self.arch.max_seq_len, self.arch.rope_theta)
        self.model.rope_cos.copy_(cos)
        self.model.rope_sin.copy_(sin)

    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """Return (B, T, V) logits for (B, T) token ids."""
        hidden = self.hidden_states(input_ids, position_ids=position_ids,
                                    document_ids=document_ids, kv_cache=kv_cache)
        return self.lm_head(hidden)

    def hidden_states(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                      document_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                      padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return (B, T, D) final-norm outputs, ready for `lm_head` (or a chunked loss).

        `padding_mask` (B, T), 1 on tokens and 0 on right padding, runs every per-token layer on
        the real tokens only (`models/unpadding.py`); padding positions then come back as zeros.
        """
        seq_len = input_ids.shape[1]
        start = 0 if kv_cache is None else kv_cache.length
        if document_ids is not None:
            if kv_cache is not None:
                raise ValueError("document_ids cannot be combined with a KV cache")
            if position_ids is None:
                position_ids = positions_from_documents(document_ids)
        index = unpadding_index(padding_mask, kv_cache)
        x = self.model.embed_tokens(unpadded_if(index, input_ids))  # (B, T, D), or (N, D) unpadded
        cos, sin = self._rotary(position_ids, start, seq_len)
        attn_bias, is_causal = self._attention_mask(document_ids, kv_cache, seq_len, x)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer_idx, layer in enumerate(self.model.layers):
            if checkpointing and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, attn_bias, is_causal, index=index, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attn_bias, is_causal, kv_cache, layer_idx, index)
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        return padded_if(index, self.model.norm(x))

    def _rotary(self, position_ids, start: int, seq_len: int):
        """Return cos/sin broadcastable to (B, H, T, hd)."""
        return rotary_for_positions(self.model.rope_cos, self.model.rope_sin, position_ids, start, seq_len)

    def _attention_mask(self, document_ids, kv_cache, seq_len: int, x: torch.Tensor):
        """Return (additive bias or None, is_causal) for this call."""
        return attention_mask_for(document_ids, kv_cache, seq_len, x)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, *,
                     dtype: torch.dtype | None = None) -> KVCache:
        """Allocate a KV cache for `batch_size` sequences of up to `max_len` (default max_seq_len)."""
        weight = self.model.embed_tokens.weight
        return KVCache(self.arch.n_layers, batch_size, self.arch.n_kv_heads,
                       max_len or self.arch.max_seq_len, self.arch.head_dim,
                       dtype=dtype or weight.dtype, device=weight.device)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Return the tensors to save, HF-style: a tied `lm_head.weight` is left out."""
        state = {name: t.detach().contiguous() for name, t in self.state_dict().items()}
        if self.arch.tie_embeddings:
            del state["lm_head.weight"]
        return state

    def load_exported_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by `export_state_dict` (or by HF), filling a tied head."""
        if self.arch.tie_embeddings and "lm_head.weight" not in state:
            state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
        self.load_state_dict(state, strict=True)


def build_model(arch: Architecture, dropout: float = 0.0) -> DecoderLM:
    """Build a freshly initialised decoder LM for `arch`."""
    return DecoderLM(arch, dropout=dropout)


@torch.no_grad()
def grow_vocabulary(model: nn.Module, vocab_size: int, *, dropout: float = 0.0) -> nn.Module:
    """A copy of `model` (any decoder with `model.embed_tokens`) with `vocab_size` rows; new rows are the mean of the old."""
    old = model.arch.vocab_size
    grown = type(model)(model.arch.with_overrides(vocab_size=vocab_size), dropout=dropout)
    state = model.export_state_dict()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in state:
            weight = state[name]
            state[name] = torch.cat([weight, weight.mean(0, keepdim=True).expand(vocab_size - old, -1)])
    grown.load_exported_state_dict(state)
    grown.gradient_checkpointing = model.gradient_checkpointing
    return grown.to(model.model.embed_tokens.weight.device)

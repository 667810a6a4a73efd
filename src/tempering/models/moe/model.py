"""The mixture-of-experts decoder LM, with Hugging Face `MixtralForCausalLM` parameter names
(`Qwen2MoeForCausalLM`'s when it has a shared expert).

Each block is Llama attention (the shared layers of `models/layers.py`) followed by a sparse
MoE: a router picks each token's top-k experts and mixes their SwiGLU outputs by the
renormalised router probabilities (Mixtral's rule). Routing is dropless: every token reaches
each of its k experts, whatever the load. Tokens are sorted by expert once and each expert
runs on its contiguous slice — one `grouped_mm` over all experts on CUDA (compute capability
9.0 and up, bf16), else one matmul per expert; never a loop over tokens. Each expert keeps its
own three `nn.Linear`s (`w1`/`w3`/`w2`, or `gate_proj`/`up_proj`/`down_proj`), so one expert
can be frozen (sequential expert training) or wrapped by LoRA; wrapped experts take the
per-expert path. So does a CPU, though torch has `grouped_mm` there: it needs every expert's
weights stacked into one new tensor per layer and pass, kept for the backward, and on a CPU it
cost as much CPU time as one matmul per expert (moe_nano: peak RSS 1,296 → 1,190 MB in fp32
and 1,324 → 1,230 MB in bf16 without it; docs/performance.md).

On a CPU in bf16/fp16 each expert's slice of `CPU_ROW_BUCKET` rows or more is padded with zero
rows to a multiple of it. oneDNN, which runs those matmuls, compiles and caches one kernel (with
its scratch buffers) per shape; slices whose length changes every step made new kernels every
step, and the process grew by ~100 MB a step (moe_nano, docs/performance.md). Padded slices
repeat a few shapes. Shorter slices (token-by-token decoding) keep their length: they can only
take a few shapes, and padding them would multiply their work. Zero rows add nothing to the
weights' gradients and their outputs are dropped, so the result is the unpadded one.

With `arch.shared_expert_d_ff` above 0, each MoE layer adds a shared SwiGLU expert that
every token goes through, scaled per token by `sigmoid(shared_expert_gate(x))`, as
Qwen2-MoE does; `arch.names` then gives every MoE module Qwen2-MoE's name, so the state
dict is that model's checkpoint as it is.

The router's auxiliary losses come back from `hidden_states_and_auxiliary` with the hidden
states (see `models/auxiliary.py`): the load-balancing loss in Mixtral's form
(`E * sum_j f_j * P_j` over the tokens of all layers, f_j the fraction of top-k assignments
and P_j the mean router probability of expert j, as transformers' `load_balancing_loss_func`)
and the ST-MoE z-loss (the mean squared log-sum-exp of the router logits).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tempering.models.auxiliary import AuxiliaryLosses
from tempering.models.layers import (
    Attention,
    KVCache,
    RMSNorm,
    compute_dtype,
    residual_std,
    rotary_tables,
)
from tempering.models.llama.model import (
    attention_mask_for,
    positions_from_documents,
    rotary_for_positions,
)
from tempering.models.moe.architecture import MoeArchitecture, MoeNames
from tempering.models.unpadding import padded_if, unpadded_if, unpadding_index

INIT_STD = 0.02
# torch 2.8 added the private op, a later release the public one; either takes (M, K) x (E, K, N) with offsets.
_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
CPU_ROW_BUCKET = 64  # expert slices of this many rows or more on a CPU in bf16/fp16 are padded to a multiple of it


class RouterStats(NamedTuple):
    """One layer's routing, summed over its tokens: what the auxiliary losses and the load metrics need."""

    assignments: torch.Tensor  # (E,) top-k assignments per expert (no gradient)
    probability: torch.Tensor  # (E,) router probability summed over tokens
    z_squared: torch.Tensor  # 0-dim: sum over tokens of logsumexp(router logits)^2
    num_tokens: int


class Expert(nn.Module):
    """One expert: a SwiGLU MLP, down(silu(gate(x)) * up(x)), under its layout's names (Mixtral's w1, w3, w2)."""

    def __init__(self, d_model: int, d_ff: int, names: MoeNames):
        super().__init__()
        self.names = names
        # Registered gate, down, up (Mixtral's w1, w2, w3): the order initialisation draws them in.
        self.add_module(names.gate, nn.Linear(d_model, d_ff, bias=False))
        self.add_module(names.down, nn.Linear(d_ff, d_model, bias=False))
        self.add_module(names.up, nn.Linear(d_model, d_ff, bias=False))

    def projections(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The gate, up and down projections (read by name: LoRA may have replaced them)."""
        return getattr(self, self.names.gate), getattr(self, self.names.up), getattr(self, self.names.down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up, down = self.projections()
        return down(F.silu(gate(x)) * up(x))


class SparseMoe(nn.Module):
    """Top-k router over `n_experts` experts, dropless, plus the optional gated shared expert.

    `block_sparse_moe` in Mixtral's names, `mlp` in Qwen2-MoE's.
    """

    def __init__(self, arch: MoeArchitecture):
        super().__init__()
        self.top_k = arch.experts_per_token
        self.forced_expert: int | None = None  # a sequential expert run sends every token to this expert
        self.gate = nn.Linear(arch.d_model, arch.n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(arch.d_model, arch.d_ff, arch.names) for _ in range(arch.n_experts))
        self.has_shared_expert = arch.shared_expert_d_ff > 0
        if self.has_shared_expert:
            self.shared_expert = Expert(arch.d_model, arch.shared_expert_d_ff, arch.names)
            self.shared_expert_gate = nn.Linear(arch.d_model, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterStats]:
        """Mix (..., D) through each token's top-k experts; return the output and the layer's routing stats."""
        flat = x.reshape(-1, x.shape[-1])  # (N, D)
        logits = self.gate(flat).float()  # (N, E); routing decisions in fp32 whatever the compute dtype
        probs = logits.softmax(dim=-1)
        if self.forced_expert is None:
            top_probs, top_experts = probs.topk(self.top_k, dim=-1)  # (N, k)
            top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)
        else:  # (N, 1): the one expert being trained, at full weight
            top_experts = torch.full_like(logits[:, :1], self.forced_expert, dtype=torch.long)
            top_probs = torch.ones_like(logits[:, :1])
        out, counts = self._dispatch(flat, top_probs, top_experts)
        if self.has_shared_expert:
            out = out + self._shared(flat.to(compute_dtype(flat)))
        stats = RouterStats(counts.to(probs.dtype), probs.sum(dim=0),
                            torch.logsumexp(logits, dim=-1).square().sum(), flat.shape[0])
        return out.view(x.shape), stats

    def _shared(self, flat: torch.Tensor) -> torch.Tensor:
        """The shared expert's (N, D) output, scaled per token by sigmoid(shared_expert_gate(x)) (Qwen2-MoE's rule)."""
        return torch.sigmoid(self.shared_expert_gate(flat)) * self.shared_expert(flat)  # (N, 1) * (N, D)

    def _dispatch(self, flat: torch.Tensor, top_probs: torch.Tensor,
                  top_experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every (token, expert) assignment through its expert, grouped by expert: (N, D) sums, (E,) counts."""
        num_tokens, top_k = top_experts.shape
        flat_experts = top_experts.reshape(-1)  # (N*k,) assignment a is token a // k
        order = torch.argsort(flat_experts, stable=True)  # assignments grouped by expert, in token order
        token_index = order // top_k  # (N*k,)
        # (E,) assignments per expert; a fixed-size scatter rather than bincount, whose size depends on the values.
        counts = torch.zeros(len(self.experts), dtype=torch.long, device=flat.device).index_add_(
            0, flat_experts, torch.ones_like(flat_experts))
        # index_select, not flat[token_index]: its backward is index_add_, several times faster on a CPU than
        # the accumulating index_put_ that advanced indexing differentiates to.
        inputs = flat.index_select(0, token_index).to(compute_dtype(flat))  # (N*k, D), one cast under autocast
        rows, slot = _padded_layout(counts, flat_experts[order], inputs)
        if slot is not None:  # each expert's rows at the start of its padded slice, zeros after
            inputs = inputs.new_zeros(int(rows.sum()), inputs.shape[1]).index_copy_(0, slot, inputs)
        if self._can_group(inputs):
            outputs = self._grouped_experts(inputs, rows)
        else:
            chunks = inputs.split(rows.tolist())
            outputs = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, chunks, strict=True)])
        if slot is not None:
            outputs = outputs.index_select(0, slot)  # (N*k, D): the padding rows dropped
        weights = top_probs.reshape(-1)[order].unsqueeze(1).to(outputs.dtype)  # (N*k, 1)
        mixed = torch.zeros(num_tokens, flat.shape[1], dtype=outputs.dtype, device=flat.device)
        return mixed.index_add_(0, token_index, outputs * weights), counts  # (N, D), (E,)

    def _can_group(self, inputs: torch.Tensor) -> bool:
        """grouped_mm exists, this is a CUDA device and dtype it is fast on, and the experts are plain linears."""
        if _GROUPED_MM is None or not all(type(layer) is nn.Linear for expert in self.experts
                                          for layer in expert.projections()):
            return False
        return (inputs.device.type == "cuda" and inputs.dtype == torch.bfloat16
                and torch.cuda.get_device_capability(inputs.device) >= (9, 0))

    def _grouped_experts(self, inputs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """All experts in two grouped matmuls over the expert-sorted (M, D) inputs; (M, D)."""
        dtype = inputs.dtype
        projections = [expert.projections() for expert in self.experts]  # (gate, up, down) of each
        # (E, D, 2F): gate and up side by side, so one grouped matmul makes both halves of the SwiGLU.
        gate_up = torch.stack([torch.cat([g.weight, u.weight]).to(dtype) for g, u, _ in projections]).transpose(1, 2)
        down = torch.stack([d.weight.to(dtype) for _, _, d in projections]).transpose(1, 2)  # (E, F, D)
        offsets = counts.cumsum(0).to(torch.int32)  # end of each expert's rows
        gate, up = _GROUPED_MM(inputs, gate_up, offs=offsets).chunk(2, dim=-1)  # (M, F) each
        return _GROUPED_MM(F.silu(gate) * up, down, offs=offsets)


def _padded_layout(counts: torch.Tensor, sorted_experts: torch.Tensor,
                   inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(E,) rows per expert slice and each sorted assignment's row, padded on a CPU in bf16/fp16; else (counts, None)."""
    if inputs.device.type != "cpu" or inputs.dtype == torch.float32:
        return counts, None
    bucketed = (counts + CPU_ROW_BUCKET - 1) // CPU_ROW_BUCKET * CPU_ROW_BUCKET
    rows = torch.where(counts >= CPU_ROW_BUCKET, bucketed, counts)
    first_row = rows.cumsum(0) - rows  # where each expert's padded slice starts
    first_assignment = counts.cumsum(0) - counts  # where its assignments start in the sorted order
    rank = torch.arange(sorted_experts.numel(), device=inputs.device) - first_assignment[sorted_experts]
    return rows, first_row[sorted_experts] + rank


class MoeBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + moe(norm(x)); also returns the router stats."""

    def __init__(self, arch: MoeArchitecture, dropout: float):
        super().__init__()
        self.self_attn = Attention(arch.d_model, arch.n_heads, arch.n_kv_heads, dropout, head_dim=arch.head_dim)
        self.moe_name = arch.names.moe
        self.add_module(self.moe_name, SparseMoe(arch))
        self.input_layernorm = RMSNorm(arch.d_model, arch.norm_eps)
        self.post_attention_layernorm = RMSNorm(arch.d_model, arch.norm_eps)
        self.dropout = dropout

    def forward(self, x, cos, sin, attn_bias, is_causal, kv_cache=None, layer_idx=0, index=None):
        """Apply the block to (B, T, D), or to the (N, D) real tokens of a padded batch given `index`."""
        h = self.self_attn(self.input_layernorm(x), cos, sin, attn_bias, is_causal, kv_cache, layer_idx, index)
        x = x + self._drop(h)
        mixed, stats = self.moe(self.post_attention_layernorm(x))
        return x + self._drop(mixed), stats

    @property
    def moe(self) -> SparseMoe:
        """The block's MoE module, whatever its layout calls it."""
        return getattr(self, self.moe_name)

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(h, self.dropout, self.training) if self.dropout else h


class MoeBackbone(nn.Module):
    """Container for the `model.` half of the HF names: embeddings, blocks, final norm."""

    def __init__(self, arch: MoeArchitecture, dropout: float):
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.d_model)
        self.layers = nn.ModuleList(MoeBlock(arch, dropout) for _ in range(arch.n_layers))
        self.norm = RMSNorm(arch.d_model, arch.norm_eps)
        cos, sin = rotary_tables(arch.head_dim, arch.max_seq_len, arch.rope_theta)  # not saved, as in HF
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)


class MoeDecoderLM(nn.Module):
    """Mixtral-style decoder LM; `state_dict()` keys equal MixtralForCausalLM's (or Qwen2MoeForCausalLM's) names."""

    def __init__(self, arch: MoeArchitecture, dropout: float = 0.0):
        super().__init__()
        arch.check()
        self.arch = arch
        self.model = MoeBackbone(arch, dropout)
        self.lm_head = nn.Linear(arch.d_model, arch.vocab_size, bias=False)
        if arch.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.gradient_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """normal(0, 0.02) weights; the projections into the residual stream (o_proj, each down) get 0.02/sqrt(2L)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        out_std = residual_std(INIT_STD, self.arch.n_layers)
        for layer in self.model.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, mean=0.0, std=out_std)
            for expert in layer.moe.modules():  # the routed experts and the shared one
                if isinstance(expert, Expert):
                    nn.init.normal_(expert.projections()[2].weight, mean=0.0, std=out_std)
        cos, sin = rotary_tables(self.arch.head_dim, self.arch.max_seq_len, self.arch.rope_theta)
        self.model.rope_cos.copy_(cos)
        self.model.rope_sin.copy_(sin)

    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Return (B, T, V) logits for (B, T) token ids."""
        return self.lm_head(self.hidden_states(input_ids, position_ids=position_ids, document_ids=document_ids,
                                               kv_cache=kv_cache))

    def hidden_states(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Return (B, T, D) final-norm outputs (the router's auxiliary losses are dropped: not for training)."""
        hidden, _ = self._run(input_ids, **kwargs)
        return hidden

    def hidden_states_and_auxiliary(self, input_ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, AuxiliaryLosses]:
        """Return (B, T, D) final-norm outputs and the router's auxiliary losses and load metrics for this pass."""
        hidden, stats = self._run(input_ids, **kwargs)
        return hidden, self.router_losses(stats)

    def _run(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
             document_ids: torch.Tensor | None = None, kv_cache: KVCache | None = None,
             padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[RouterStats]]:
        """Final-norm outputs and each layer's router stats; `padding_mask` as in the dense decoder (padding
        is then neither computed nor routed, so the router losses count real tokens only, as HF's do)."""
        seq_len = input_ids.shape[1]
        start = 0 if kv_cache is None else kv_cache.length
        if document_ids is not None:
            if kv_cache is not None:
                raise ValueError("document_ids cannot be combined with a KV cache")
            if position_ids is None:
                position_ids = positions_from_documents(document_ids)
        index = unpadding_index(padding_mask, kv_cache)
        x = self.model.embed_tokens(unpadded_if(index, input_ids))  # (B, T, D), or (N, D) unpadded
        cos, sin = rotary_for_positions(self.model.rope_cos, self.model.rope_sin, position_ids, start, seq_len)
        attn_bias, is_causal = attention_mask_for(document_ids, kv_cache, seq_len, x)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        stats = []
        for layer_idx, layer in enumerate(self.model.layers):
            if checkpointing and kv_cache is None:
                x, layer_stats = checkpoint(layer, x, cos, sin, attn_bias, is_causal, index=index,
                                            use_reentrant=False)
            else:
                x, layer_stats = layer(x, cos, sin, attn_bias, is_causal, kv_cache, layer_idx, index)
            stats.append(layer_stats)
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        return padded_if(index, self.model.norm(x)), stats

    def route_every_token_to(self, expert: int | None) -> None:
        """Send every token to `expert` alone (a sequential expert run), or back to top-k routing (None)."""
        for layer in self.model.layers:
            layer.moe.forced_expert = expert

    def router_losses(self, stats: list[RouterStats]) -> AuxiliaryLosses:
        """Load-balancing loss and z-loss over every layer's tokens (coefficients applied), and load metrics."""
        num_rows = sum(s.num_tokens for s in stats)
        load = torch.stack([s.assignments for s in stats]).sum(0) / num_rows  # (E,) sums to k
        probability = torch.stack([s.probability for s in stats]).sum(0) / num_rows  # (E,) sums to 1
        balance = self.arch.n_experts * (load * probability).sum()
        z_loss = torch.stack([s.z_squared for s in stats]).sum() / num_rows
        loss = torch.zeros((), dtype=balance.dtype, device=balance.device)
        forced = self.model.layers[0].moe.forced_expert is not None  # the router decides nothing
        if self.arch.router_aux_loss_coef > 0 and not forced:
            loss = loss + self.arch.router_aux_loss_coef * balance
        if self.arch.router_z_loss_coef > 0 and not forced:
            loss = loss + self.arch.router_z_loss_coef * z_loss
        metrics = {"moe/aux_loss": balance.detach(), "moe/z_loss": z_loss.detach()}
        top_k = 1 if forced else self.arch.experts_per_token
        for expert in range(self.arch.n_experts):
            metrics[f"moe/load/expert_{expert}"] = load[expert].detach() / top_k
            metrics[f"moe/router_prob/expert_{expert}"] = probability[expert].detach()
        return AuxiliaryLosses(loss, metrics)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, *,
                     dtype: torch.dtype | None = None) -> KVCache:
        """Allocate a KV cache for `batch_size` sequences of up to `max_len` (default max_seq_len)."""
        weight = self.model.embed_tokens.weight
        return KVCache(self.arch.n_layers, batch_size, self.arch.n_kv_heads, max_len or self.arch.max_seq_len,
                       self.arch.head_dim, dtype=dtype or weight.dtype, device=weight.device)

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

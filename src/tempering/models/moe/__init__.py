"""The `moe` family: a Mixtral-style mixture-of-experts decoder LM (reads and writes Mixtral checkpoints, and
Qwen2-MoE checkpoints for a model with a shared expert).

This package's `__init__` is the family declaration (torch-free); the model itself is in
`model.py` and is imported only when a model is built.
"""

from __future__ import annotations

import re
from typing import Any

from tempering.errors import UserError
from tempering.models.family import (
    ModelFamily,
    ParameterLayout,
    SpecialTokenIds,
    decoder_generation_config,
)
from tempering.models.moe import hf_config
from tempering.models.moe.architecture import (
    HF_MODEL_TYPES,
    PRESETS,
    MoeArchitecture,
    count_active_parameters,
    count_non_embedding_parameters,
    count_parameters,
    expected_tensors,
)

# Mixtral's `block_sparse_moe.experts.{j}.` and Qwen2-MoE's `mlp.experts.{j}.`; not `mlp.shared_expert.`, which is shared.
EXPERT_PATTERN = re.compile(r"model\.layers\.\d+\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.")
# Mixtral's `block_sparse_moe.gate` and Qwen2-MoE's `mlp.gate` (not `shared_expert_gate`: that one is shared).
ROUTER_PATTERN = "model.layers.*.gate"


class MoeFamily(ModelFamily):
    """Decoder-only mixture-of-experts causal LMs with Hugging Face Mixtral (or Qwen2-MoE) parameter names."""

    name = "moe"
    hf_model_types = HF_MODEL_TYPES
    layout = ParameterLayout(embeddings=("model.embed_tokens.weight",), head=("lm_head.weight",),
                             final_norm=("model.norm.weight",), block_pattern=re.compile(r"model\.layers\.(\d+)\."),
                             expert_pattern=EXPERT_PATTERN, router=ROUTER_PATTERN)
    presets = PRESETS

    def model_type(self, arch: MoeArchitecture) -> str:
        """mixtral, or qwen2_moe for a model with a shared expert."""
        return arch.hf_model_type

    def architecture(self, preset: str, overrides: dict[str, Any]) -> MoeArchitecture:
        """The preset's architecture with the non-None overrides applied, checked."""
        unknown = sorted(set(overrides) - set(MoeArchitecture.__dataclass_fields__))
        if unknown:
            raise UserError(f"model.{unknown[0]} is not a dimension of the {self.name} family")
        arch = PRESETS[preset].with_overrides(**overrides)
        arch.check()
        return arch

    def build(self, arch: MoeArchitecture, *, dropout: float = 0.0):
        """A freshly initialised MoeDecoderLM."""
        from tempering.models.moe.model import MoeDecoderLM

        return MoeDecoderLM(arch, dropout=dropout)

    def to_hf_config(self, arch: MoeArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict:
        """config.json for MixtralForCausalLM (Qwen2MoeForCausalLM with a shared expert)."""
        return hf_config.to_hf_config(arch, dropout=dropout, special=special)

    def from_hf_config(self, config: dict, *, where: str | None = None) -> MoeArchitecture:
        """The architecture of a Mixtral or Qwen2-MoE config.json."""
        return hf_config.from_hf_config(config, where=where)

    def count_parameters(self, arch: MoeArchitecture) -> int:
        """Parameters of the model, every expert included, a tied head once."""
        return count_parameters(arch)

    def count_active_parameters(self, arch: MoeArchitecture) -> int:
        """Parameters one token passes through (its top-k experts and the shared one, not the others)."""
        return count_active_parameters(arch)

    def count_non_embedding_parameters(self, arch: MoeArchitecture) -> int:
        """Parameters outside the embedding and the head."""
        return count_non_embedding_parameters(arch)

    def expected_tensors(self, arch: MoeArchitecture) -> dict[str, tuple[int, ...]]:
        """Every tensor a checkpoint holds, by name and shape."""
        return expected_tensors(arch)

    def optional_tensors(self, arch: MoeArchitecture) -> dict[str, tuple[int, ...]]:
        """Some exporters write a tied head as its own tensor."""
        return {"lm_head.weight": (arch.vocab_size, arch.d_model)} if arch.tie_embeddings else {}

    def resize_vocabulary(self, model, vocab_size: int, *, dropout: float = 0.0):
        """Grow the embedding and head to `vocab_size` rows, new rows at the mean embedding."""
        from tempering.models.llama.model import grow_vocabulary

        return grow_vocabulary(model, vocab_size, dropout=dropout)

    def generation_config(self, special: SpecialTokenIds) -> dict:
        """generation_config.json: stop at every end token (EOS and, after chat tuning, end of turn)."""
        return decoder_generation_config(special)

    def summary(self, arch: MoeArchitecture) -> dict[str, Any]:
        """Columns of `temper presets`."""
        return {"vocab": arch.vocab_size, "d_model": arch.d_model, "layers": arch.n_layers, "heads": arch.n_heads,
                "kv heads": arch.n_kv_heads, "d_ff": arch.d_ff, "experts": f"{arch.experts_per_token}/{arch.n_experts}",
                "context": arch.max_seq_len, "rope θ": f"{arch.rope_theta:g}",
                "tied": "yes" if arch.tie_embeddings else "no"}


MOE = MoeFamily()

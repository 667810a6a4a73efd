"""Every dimension of a mixture-of-experts decoder, the named presets, parameter counts and checkpoint tensors.

Data only: nothing here imports torch. The decoder is Mixtral's: Llama attention, and in
place of the dense MLP a router (`block_sparse_moe.gate`) that sends each token to its
top `experts_per_token` of `n_experts` SwiGLU experts (`block_sparse_moe.experts.{j}.w1`
gate, `w3` up, `w2` down), mixing their outputs by the renormalised router probabilities.
The router's auxiliary losses (load balancing, z-loss) are part of the architecture
because Mixtral's `config.json` carries the balancing coefficient.

With `shared_expert_d_ff` above 0 each layer also has a shared expert every token goes
through, scaled by a sigmoid gate, as in Qwen2-MoE; such a model takes Qwen2-MoE's names
(`mlp.gate`, `mlp.experts.{j}.gate_proj/up_proj/down_proj`, `mlp.shared_expert.*`,
`mlp.shared_expert_gate`) so that its checkpoint is a `Qwen2MoeForCausalLM`. `names`
says which layout an architecture has; the model and `expected_tensors` both follow it,
so the module names are the checkpoint names and nothing is renamed on save or load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

from tempering.errors import UserError

HF_MODEL_TYPES = ("mixtral", "qwen2_moe")
PRESET_VOCAB_SIZE = 32_000  # the vocabulary the full-size presets are sized (and counted) at


@dataclass(frozen=True)
class MoeArchitecture:
    """Every dimension of a Mixtral-style mixture-of-experts decoder."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int  # hidden width of each expert's SwiGLU
    n_experts: int
    max_seq_len: int
    experts_per_token: int = 2  # top-k routing
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    attention_head_dim: int | None = None  # None: d_model // n_heads
    router_aux_loss_coef: float = 0.01  # load-balancing loss weight (Switch/Mixtral form); 0 disables
    router_z_loss_coef: float = 0.001  # router z-loss weight (ST-MoE); 0 disables
    shared_expert_d_ff: int = 0  # hidden width of the shared expert every token goes through; 0: none (Mixtral)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.attention_head_dim or self.d_model // self.n_heads

    @property
    def hf_model_type(self) -> str:
        """The transformers model a checkpoint of this architecture is: qwen2_moe with a shared expert, else mixtral."""
        return "qwen2_moe" if self.shared_expert_d_ff else "mixtral"

    @property
    def names(self) -> MoeNames:
        """The parameter names of this architecture's MoE layers (Qwen2-MoE's with a shared expert, else Mixtral's)."""
        return QWEN2_MOE_NAMES if self.shared_expert_d_ff else MIXTRAL_NAMES

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model, naming the model.* key."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "n_experts",
                     "max_seq_len", "experts_per_token"):
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.experts_per_token > self.n_experts:
            raise UserError(f"model.experts_per_token ({self.experts_per_token}) cannot exceed model.n_experts "
                            f"({self.n_experts})")
        if self.attention_head_dim is None and self.d_model % self.n_heads:
            raise UserError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads "
                            f"({self.n_kv_heads})")
        for name in ("router_aux_loss_coef", "router_z_loss_coef", "shared_expert_d_ff"):
            if getattr(self, name) < 0:
                raise UserError(f"model.{name} must be 0 (off) or positive, got {getattr(self, name)}")

    def with_overrides(self, **overrides) -> MoeArchitecture:
        """Return a copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain dict of the dimensions."""
        return asdict(self)


class MoeNames(NamedTuple):
    """Where a layout puts a layer's MoE parameters: the block's MoE module and each expert's three projections."""

    moe: str  # the MoE module of a block, holding `gate` (the router) and `experts`
    gate: str  # the SwiGLU's gated input projection
    up: str  # its plain input projection
    down: str  # its output projection


MIXTRAL_NAMES = MoeNames(moe="block_sparse_moe", gate="w1", up="w3", down="w2")
QWEN2_MOE_NAMES = MoeNames(moe="mlp", gate="gate_proj", up="up_proj", down="down_proj")


def _preset(d_model: int, n_layers: int, n_experts: int, d_ff: int, *, n_kv_heads: int | None = None,
            tie: bool = False, max_seq_len: int = 2048) -> MoeArchitecture:
    """A full-size preset: 64-wide heads, vocabulary PRESET_VOCAB_SIZE, top-2 routing."""
    n_heads = d_model // 64
    return MoeArchitecture(vocab_size=PRESET_VOCAB_SIZE, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                           n_kv_heads=n_kv_heads or n_heads, d_ff=d_ff, n_experts=n_experts,
                           max_seq_len=max_seq_len, tie_embeddings=tie)


PRESETS: dict[str, MoeArchitecture] = {
    # For tests: seconds per run on a CPU core.
    "moe_tiny": MoeArchitecture(vocab_size=1024, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                                n_experts=4, max_seq_len=256, tie_embeddings=True),
    # The CPU demo scale (the MoE twin of `nano`).
    "moe_nano": MoeArchitecture(vocab_size=8192, d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, d_ff=512,
                                n_experts=8, max_seq_len=512),
    "mac_nano": _preset(448, 12, 5, 1792),
    "mac_mini": _preset(512, 14, 6, 1408),
    # Six experts of ~70M parameters each (w1, w2, w3 over all 16 layers), trained one at a time.
    "expert_75m": _preset(896, 16, 6, 1632, n_kv_heads=2, tie=True),
    "mac_base": _preset(640, 16, 8, 1024),
    "mac_plus": _preset(704, 18, 8, 960),
}


def expected_tensors(arch: MoeArchitecture) -> dict[str, tuple[int, ...]]:
    """The tensors MoeDecoderLM.export_state_dict writes for `arch`, by name and shape (Mixtral's or Qwen2-MoE's)."""
    d_model, d_attn, d_kv = arch.d_model, arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    moe = arch.names.moe
    shapes = {"model.embed_tokens.weight": (arch.vocab_size, d_model), "model.norm.weight": (d_model,)}
    block = {"self_attn.q_proj.weight": (d_attn, d_model), "self_attn.k_proj.weight": (d_kv, d_model),
             "self_attn.v_proj.weight": (d_kv, d_model), "self_attn.o_proj.weight": (d_model, d_attn),
             f"{moe}.gate.weight": (arch.n_experts, d_model)}
    for expert in range(arch.n_experts):
        block.update(_swiglu_tensors(f"{moe}.experts.{expert}", arch.names, d_model, arch.d_ff))
    if arch.shared_expert_d_ff:
        block.update(_swiglu_tensors(f"{moe}.shared_expert", arch.names, d_model, arch.shared_expert_d_ff))
        block[f"{moe}.shared_expert_gate.weight"] = (1, d_model)
    block.update({"input_layernorm.weight": (d_model,), "post_attention_layernorm.weight": (d_model,)})
    for index in range(arch.n_layers):
        shapes.update({f"model.layers.{index}.{name}": shape for name, shape in block.items()})
    if not arch.tie_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, d_model)
    return shapes


def _swiglu_tensors(prefix: str, names: MoeNames, d_model: int, d_ff: int) -> dict[str, tuple[int, ...]]:
    """One SwiGLU's three weights under `prefix`: gate, down, up."""
    return {f"{prefix}.{names.gate}.weight": (d_ff, d_model), f"{prefix}.{names.down}.weight": (d_model, d_ff),
            f"{prefix}.{names.up}.weight": (d_ff, d_model)}


def count_parameters(arch: MoeArchitecture) -> int:
    """Count the parameters of the model (a tied head once), every expert included."""
    return sum(_numel(shape) for shape in expected_tensors(arch).values())


def count_active_parameters(arch: MoeArchitecture) -> int:
    """Count the parameters one token passes through: all but the experts it is not routed to (a shared expert counts)."""
    idle_experts = arch.n_experts - arch.experts_per_token
    return count_parameters(arch) - arch.n_layers * idle_experts * count_expert_parameters_per_layer(arch)


def count_expert_parameters_per_layer(arch: MoeArchitecture) -> int:
    """Parameters of one expert's SwiGLU in one layer (w1, w2, w3)."""
    return 3 * arch.d_model * arch.d_ff


def count_non_embedding_parameters(arch: MoeArchitecture) -> int:
    """Count the parameters outside the token embedding and the output head."""
    head = 0 if arch.tie_embeddings else arch.vocab_size * arch.d_model
    return count_parameters(arch) - arch.vocab_size * arch.d_model - head


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count

"""Every dimension of a Llama-style decoder, the named presets, parameter counts and checkpoint tensors.

Data only: nothing here imports torch. The same dataclass describes the Hugging Face
decoders that differ from Llama in a few switches — Mistral (no differences once sliding
windows are off), Qwen2 (biases on the q/k/v projections) and Qwen3 (RMSNorm over each
query and key head, an explicit head width) — so `temper import` brings them in and their
checkpoints load back with their own transformers class (`hf_model_type`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tempering.errors import UserError

HF_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class Architecture:
    """Every dimension of a Llama-style decoder (and of the Mistral / Qwen2 / Qwen3 variants)."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_seq_len: int
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    attention_head_dim: int | None = None  # None: d_model // n_heads
    attention_bias: bool = False  # biases on the q, k and v projections
    attention_out_bias: bool = False  # a bias on the output projection
    qk_norm: bool = False  # RMSNorm over each query and key head before the rotation (Qwen3)
    hf_model_type: str = "llama"  # the transformers class a checkpoint loads with

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.attention_head_dim or self.d_model // self.n_heads

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model, naming the model.* key."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.attention_head_dim is None and self.d_model % self.n_heads:
            raise UserError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.attention_head_dim is not None and (self.attention_head_dim <= 0 or self.attention_head_dim % 2):
            raise UserError(f"model.attention_head_dim must be a positive even number, got {self.attention_head_dim}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(
                f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads ({self.n_kv_heads})"
            )
        self._check_variant()

    def _check_variant(self) -> None:
        """Each transformers class fixes some switches; refuse a combination it could not load."""
        kind = self.hf_model_type
        if kind not in HF_MODEL_TYPES:
            raise UserError(f"model.hf_model_type {kind!r} is not one of {', '.join(HF_MODEL_TYPES)}")
        if kind == "qwen2" and not (self.attention_bias and not self.attention_out_bias):
            raise UserError("a qwen2 model has biases on q/k/v and none on the output projection "
                            "(model.attention_bias=true, model.attention_out_bias=false)")
        if kind == "mistral" and (self.attention_bias or self.attention_out_bias):
            raise UserError("a mistral model has no attention biases (model.attention_bias=false)")
        if kind in ("llama", "qwen3") and self.attention_bias != self.attention_out_bias:
            raise UserError(f"a {kind} model has biases on all four attention projections or on none "
                            "(set model.attention_bias and model.attention_out_bias alike)")
        if self.qk_norm != (kind == "qwen3"):
            raise UserError("model.qk_norm is what a qwen3 model has and the other variants lack "
                            f"(model.hf_model_type is {kind!r})")

    def with_overrides(self, **overrides) -> Architecture:
        """Return a copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain dict of the dimensions."""
        return asdict(self)


PRESETS: dict[str, Architecture] = {
    # For tests: seconds per run on a CPU core.
    "tiny": Architecture(vocab_size=1024, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=128, max_seq_len=256, tie_embeddings=True),
    # The CPU demo: a few minutes of training shows a falling loss.
    "nano": Architecture(vocab_size=8192, d_model=256, n_layers=6, n_heads=8, n_kv_heads=4,
                         d_ff=1024, max_seq_len=512),
    # The common small-model sizes people train on one GPU.
    "small": Architecture(vocab_size=32000, d_model=512, n_layers=12, n_heads=8, n_kv_heads=8,
                          d_ff=1536, max_seq_len=1024),
    "medium": Architecture(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, n_kv_heads=3,
                           d_ff=3072, max_seq_len=2048),
    "large": Architecture(vocab_size=32000, d_model=1024, n_layers=12, n_heads=16, n_kv_heads=4,
                          d_ff=3072, max_seq_len=2048, tie_embeddings=True),
    # The dense baselines of the mixture-of-experts presets (moe family), sized at vocab 32,000.
    "dense_75m": Architecture(vocab_size=32000, d_model=512, n_layers=12, n_heads=8, n_kv_heads=8,
                              d_ff=1536, max_seq_len=2048),
    "dense_175m": Architecture(vocab_size=32000, d_model=576, n_layers=16, n_heads=9, n_kv_heads=3,
                               d_ff=4608, max_seq_len=2048),
}


def expected_tensors(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """The tensors DecoderLM.export_state_dict writes for `arch`, by name and shape.

    Written out rather than read from a model built on the meta device: initialising
    there imports torch._dynamo (about 1.5 s). A test checks it against the model.
    """
    d_model, d_attn, d_kv = arch.d_model, arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    shapes = {"model.embed_tokens.weight": (arch.vocab_size, d_model), "model.norm.weight": (d_model,)}
    block = {"self_attn.q_proj.weight": (d_attn, d_model), "self_attn.k_proj.weight": (d_kv, d_model),
             "self_attn.v_proj.weight": (d_kv, d_model), "self_attn.o_proj.weight": (d_model, d_attn),
             "mlp.gate_proj.weight": (arch.d_ff, d_model), "mlp.up_proj.weight": (arch.d_ff, d_model),
             "mlp.down_proj.weight": (d_model, arch.d_ff), "input_layernorm.weight": (d_model,),
             "post_attention_layernorm.weight": (d_model,)}
    if arch.attention_bias:
        block.update({"self_attn.q_proj.bias": (d_attn,), "self_attn.k_proj.bias": (d_kv,),
                      "self_attn.v_proj.bias": (d_kv,)})
    if arch.attention_out_bias:
        block["self_attn.o_proj.bias"] = (d_model,)
    if arch.qk_norm:
        block.update({"self_attn.q_norm.weight": (arch.head_dim,), "self_attn.k_norm.weight": (arch.head_dim,)})
    for index in range(arch.n_layers):
        shapes.update({f"model.layers.{index}.{name}": shape for name, shape in block.items()})
    if not arch.tie_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, d_model)
    return shapes


def count_parameters(arch: Architecture) -> int:
    """Count the trainable parameters a model of this architecture has (a tied head once)."""
    return sum(_numel(shape) for shape in expected_tensors(arch).values())


def count_non_embedding_parameters(arch: Architecture) -> int:
    """Count the parameters outside the token embedding and the output head."""
    head = 0 if arch.tie_embeddings else arch.vocab_size * arch.d_model
    return count_parameters(arch) - arch.vocab_size * arch.d_model - head


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count

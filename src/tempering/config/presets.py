"""Named decoder architectures (data only) and their computed parameter counts.

A preset fixes every dimension of a Llama-style decoder. The model code (in
`tempering.models`) builds from these numbers; nothing here imports torch.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace

from tempering.errors import UserError


@dataclass(frozen=True)
class Architecture:
    """Every dimension of a Llama-style decoder."""

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

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise UserError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.n_heads % self.n_kv_heads:
            raise UserError(
                f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads ({self.n_kv_heads})"
            )

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
}


def get_preset(name: str) -> Architecture:
    """Return the named preset or raise a UserError that suggests the closest name."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" — did you mean {close[0]}?" if close else ""
    raise UserError(f"unknown preset {name!r}{hint} (known: {', '.join(PRESETS)})")


def count_parameters(arch: Architecture) -> int:
    """Count the trainable parameters a model of this architecture has."""
    head_dim = arch.head_dim
    attention = arch.d_model * head_dim * (2 * arch.n_heads + 2 * arch.n_kv_heads)  # q, o + k, v
    mlp = 3 * arch.d_model * arch.d_ff  # gate, up, down
    norms = 2 * arch.d_model
    embeddings = arch.vocab_size * arch.d_model
    head = 0 if arch.tie_embeddings else arch.vocab_size * arch.d_model
    return embeddings + arch.n_layers * (attention + mlp + norms) + arch.d_model + head


def count_non_embedding_parameters(arch: Architecture) -> int:
    """Count the parameters outside the token embedding and the output head."""
    head = 0 if arch.tie_embeddings else arch.vocab_size * arch.d_model
    return count_parameters(arch) - arch.vocab_size * arch.d_model - head

"""Every dimension of the `encoder` family (a DistilBERT-style bidirectional transformer), its presets and tensors.

Data only: nothing here imports torch. One dataclass describes the backbone and the head
on top of it — `mlm` (masked-LM pretraining, `DistilBertForMaskedLM`), `token_classification`
(NER, `DistilBertForTokenClassification`, with its label names) or `none` (a bare
`DistilBertModel`, as some Hugging Face directories hold) — because the head decides which
tensors a checkpoint holds and which `transformers` class loads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tempering.errors import UserError

HEADS = ("mlm", "token_classification", "none")
ACTIVATIONS = ("gelu",)
NORM_EPS = 1e-12  # DistilBERT fixes every LayerNorm's epsilon to this
PREFIX = "distilbert."  # the backbone's parameter prefix in every head class


@dataclass(frozen=True)
class EncoderArchitecture:
    """Every dimension of a post-norm bidirectional encoder with learned positions, and its head."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_seq_len: int
    activation: str = "gelu"
    tie_embeddings: bool = True  # the MLM output projection shares the word embeddings
    head: str = "mlm"
    labels: tuple[str, ...] = ()  # token_classification: label names by id (id2label)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def num_labels(self) -> int:
        """Rows of the classifier (0 without a token-classification head)."""
        return len(self.labels)

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model, naming the model.* key."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise UserError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.head not in HEADS:
            raise UserError(f"encoder head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"activation {self.activation!r} is not supported (only {', '.join(ACTIVATIONS)})")
        if (self.head == "token_classification") != bool(self.labels):
            raise UserError("a token-classification head needs its label names, and only it has labels")
        if len(set(self.labels)) != len(self.labels):
            raise UserError(f"label names repeat: {sorted(n for n in set(self.labels) if self.labels.count(n) > 1)}")

    def with_overrides(self, **overrides) -> EncoderArchitecture:
        """Return a copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def with_head(self, head: str, labels: tuple[str, ...] = ()) -> EncoderArchitecture:
        """The same backbone under another head (token classification with these labels, or MLM)."""
        arch = replace(self, head=head, labels=tuple(labels))
        arch.check()
        return arch

    def to_dict(self) -> dict:
        """Plain dict of the dimensions."""
        return asdict(self)


PRESETS: dict[str, EncoderArchitecture] = {
    # For tests: seconds per run on a CPU core.
    "encoder_tiny": EncoderArchitecture(vocab_size=1024, d_model=64, n_layers=2, n_heads=4, d_ff=128,
                                        max_seq_len=256),
    # distilbert-base: 6 layers, 768 wide, 12 heads, 3072 FFN, 512 positions.
    "distilbert": EncoderArchitecture(vocab_size=30522, d_model=768, n_layers=6, n_heads=12, d_ff=3072,
                                      max_seq_len=512),
}


def expected_tensors(arch: EncoderArchitecture) -> dict[str, tuple[int, ...]]:
    """The tensors EncoderModel.export_state_dict writes for `arch`, by name and shape (a test checks it)."""
    d, f = arch.d_model, arch.d_ff
    shapes = {f"{PREFIX}embeddings.word_embeddings.weight": (arch.vocab_size, d),
              f"{PREFIX}embeddings.position_embeddings.weight": (arch.max_seq_len, d),
              f"{PREFIX}embeddings.LayerNorm.weight": (d,), f"{PREFIX}embeddings.LayerNorm.bias": (d,)}
    block = {"attention.q_lin.weight": (d, d), "attention.q_lin.bias": (d,),
             "attention.k_lin.weight": (d, d), "attention.k_lin.bias": (d,),
             "attention.v_lin.weight": (d, d), "attention.v_lin.bias": (d,),
             "attention.out_lin.weight": (d, d), "attention.out_lin.bias": (d,),
             "sa_layer_norm.weight": (d,), "sa_layer_norm.bias": (d,),
             "ffn.lin1.weight": (f, d), "ffn.lin1.bias": (f,), "ffn.lin2.weight": (d, f), "ffn.lin2.bias": (d,),
             "output_layer_norm.weight": (d,), "output_layer_norm.bias": (d,)}
    for index in range(arch.n_layers):
        shapes.update({f"{PREFIX}transformer.layer.{index}.{name}": shape for name, shape in block.items()})
    if arch.head == "mlm":
        shapes.update({"vocab_transform.weight": (d, d), "vocab_transform.bias": (d,),
                       "vocab_layer_norm.weight": (d,), "vocab_layer_norm.bias": (d,),
                       "vocab_projector.bias": (arch.vocab_size,)})
        if not arch.tie_embeddings:
            shapes["vocab_projector.weight"] = (arch.vocab_size, d)
    elif arch.head == "token_classification":
        shapes.update({"classifier.weight": (arch.num_labels, d), "classifier.bias": (arch.num_labels,)})
    return shapes


def count_parameters(arch: EncoderArchitecture) -> int:
    """Parameters of a model of this architecture (a tied projection once)."""
    return sum(_numel(shape) for shape in expected_tensors(arch).values())


def count_non_embedding_parameters(arch: EncoderArchitecture) -> int:
    """Parameters outside the word and position embeddings and the vocabulary projection."""
    embeddings = (arch.vocab_size + arch.max_seq_len) * arch.d_model
    untied_projection = arch.vocab_size * arch.d_model if arch.head == "mlm" and not arch.tie_embeddings else 0
    return count_parameters(arch) - embeddings - untied_projection


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count

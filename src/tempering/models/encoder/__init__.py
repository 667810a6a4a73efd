"""The `encoder` family: a DistilBERT-style bidirectional encoder for masked-LM pretraining and token classification.

This package's `__init__` is the family declaration (torch-free); the model is in `model.py`
and is imported only when a model is built. Checkpoints are Hugging Face DistilBERT
(`config.json` model_type `distilbert`); `temper import` also reads DistilBERT and BERT
directories (`hf_weights.py` renames BERT's tensors).
"""

from __future__ import annotations

import re
from typing import Any

from tempering.errors import UserError
from tempering.models.encoder import hf_config
from tempering.models.encoder.architecture import (
    PREFIX,
    PRESETS,
    EncoderArchitecture,
    count_non_embedding_parameters,
    count_parameters,
    expected_tensors,
)
from tempering.models.family import ModelFamily, ParameterLayout, SpecialTokenIds

_EMBEDDINGS = tuple(f"{PREFIX}embeddings.{name}" for name in (
    "word_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"))
_HEAD = ("classifier.weight", "classifier.bias", "vocab_transform.weight", "vocab_transform.bias",
         "vocab_layer_norm.weight", "vocab_layer_norm.bias", "vocab_projector.weight", "vocab_projector.bias")


class EncoderFamily(ModelFamily):
    """Bidirectional encoders with Hugging Face DistilBERT parameter names."""

    name = "encoder"
    hf_model_types = hf_config.HF_MODEL_TYPES
    # Post-norm: no final norm. The embedding LayerNorm belongs with the embeddings (frozen and
    # LR-decayed with them); the head is the classifier or the MLM transform and projection.
    layout = ParameterLayout(embeddings=_EMBEDDINGS, head=_HEAD, final_norm=(),
                             block_pattern=re.compile(re.escape(PREFIX) + r"transformer\.layer\.(\d+)\."))
    presets = PRESETS
    tasks = ("masked_lm", "token_classification")

    def model_type(self, arch: EncoderArchitecture) -> str:
        """Always distilbert: BERT imports are written as the DistilBERT they are equivalent to."""
        return "distilbert"

    def architecture(self, preset: str, overrides: dict[str, Any]) -> EncoderArchitecture:
        """The preset's architecture with the non-None overrides applied, checked."""
        unknown = sorted(set(overrides) - {"vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len",
                                           "tie_embeddings"})
        if unknown:
            raise UserError(f"model.{unknown[0]} is not a dimension of the {self.name} family")
        arch = PRESETS[preset].with_overrides(**overrides)
        arch.check()
        return arch

    def default_task(self, arch: EncoderArchitecture) -> str:
        """token_classification for a checkpoint with that head, else masked_lm."""
        return "token_classification" if arch.head == "token_classification" else "masked_lm"

    def build(self, arch: EncoderArchitecture, *, dropout: float = 0.0):
        """A freshly initialised EncoderModel."""
        from tempering.models.encoder.model import EncoderModel

        return EncoderModel(arch, dropout=dropout)

    def to_hf_config(self, arch: EncoderArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict:
        """config.json for DistilBertForMaskedLM / DistilBertForTokenClassification / DistilBertModel."""
        return hf_config.to_hf_config(arch, dropout=dropout, special=special)

    def from_hf_config(self, config: dict, *, where: str | None = None) -> EncoderArchitecture:
        """The architecture of a DistilBERT or BERT config.json."""
        return hf_config.from_hf_config(config, where=where)

    def import_weights(self, config: dict, weights: dict) -> dict:
        """A DistilBERT or BERT directory's tensors in DistilBERT names (BERT's token types folded in)."""
        from tempering.models.encoder.hf_weights import import_weights

        return import_weights(config.get("model_type", "distilbert"), weights)

    def count_parameters(self, arch: EncoderArchitecture) -> int:
        """Parameters of the model, a tied projection once."""
        return count_parameters(arch)

    def count_non_embedding_parameters(self, arch: EncoderArchitecture) -> int:
        """Parameters outside the embeddings and the vocabulary projection."""
        return count_non_embedding_parameters(arch)

    def expected_tensors(self, arch: EncoderArchitecture) -> dict[str, tuple[int, ...]]:
        """Every tensor a checkpoint holds, by name and shape."""
        return expected_tensors(arch)

    def optional_tensors(self, arch: EncoderArchitecture) -> dict[str, tuple[int, ...]]:
        """Some exporters write a tied vocabulary projection as its own tensor."""
        if arch.head == "mlm" and arch.tie_embeddings:
            return {"vocab_projector.weight": (arch.vocab_size, arch.d_model)}
        return {}

    def with_task_head(self, arch: EncoderArchitecture, head: str, labels: tuple[str, ...] = ()) -> EncoderArchitecture:
        """The same backbone under another head: `token_classification` with `labels`, or `mlm`."""
        return arch.with_head(head, labels)

    def adapt(self, model, arch: EncoderArchitecture, *, dropout: float = 0.0):
        """A model of `arch` carrying over `model`'s backbone, and its classifier rows by label name."""
        from tempering.models.encoder.model import adapt_model

        return adapt_model(model, arch, dropout=dropout)

    def resize_vocabulary(self, model, vocab_size: int, *, dropout: float = 0.0):
        """Grow the word embeddings (and MLM projection) to `vocab_size` rows, new rows at the mean."""
        return self.adapt(model, model.arch.with_overrides(vocab_size=vocab_size), dropout=dropout)

    def summary(self, arch: EncoderArchitecture) -> dict[str, Any]:
        """Columns of `temper presets`."""
        return {"vocab": arch.vocab_size, "d_model": arch.d_model, "layers": arch.n_layers, "heads": arch.n_heads,
                "d_ff": arch.d_ff, "context": arch.max_seq_len, "tied": "yes" if arch.tie_embeddings else "no"}


ENCODER = EncoderFamily()

"""The `talker` family: text to speech — characters to log-mel frames with durations, Griffin-Lim to audio.

Choice: non-autoregressive with durations (FastSpeech-style), the durations taken from the CTC
forced alignments of our own ASR checkpoint. Against a small autoregressive decoder with a
stop token it trains in far fewer CPU minutes (every frame in parallel, no attention alignment
to discover, no exposure bias) and synthesises in one pass, faster than real time on a CPU.
The price: it needs an ASR checkpoint to align the training data, and its voice is averaged
(L1 on log-mel), which Griffin-Lim makes audible as a buzz. Like `audio_encoder`, config.json
holds the dataclass's own fields (model_type `tempering_talker`).
"""

from __future__ import annotations

import re
from typing import Any

from tempering.errors import UserError
from tempering.models.dataclass_config import dataclass_from_config, dataclass_to_config
from tempering.models.family import ModelFamily, ParameterLayout, SpecialTokenIds
from tempering.models.talker.architecture import (
    MODEL_TYPE,
    PRESETS,
    TalkerArchitecture,
    count_parameters,
    expected_tensors,
)


class TalkerFamily(ModelFamily):
    """Characters in, log-mel frames out."""

    name = "talker"
    hf_model_types = (MODEL_TYPE,)
    # Encoder and decoder block i share index i for freezing and layer-wise LR.
    layout = ParameterLayout(embeddings=("embed_tokens.weight",), head=("mel_head.weight", "mel_head.bias"),
                             final_norm=("decoder.norm.weight",),
                             block_pattern=re.compile(r"(?:encoder|decoder)\.layers\.(\d+)\."))
    presets = PRESETS

    def model_type(self, arch: TalkerArchitecture) -> str:
        """Always tempering_talker."""
        return MODEL_TYPE

    def architecture(self, preset: str, overrides: dict[str, Any]) -> TalkerArchitecture:
        """The preset's architecture with the non-None overrides applied, checked."""
        unknown = sorted(set(overrides) - set(TalkerArchitecture.__dataclass_fields__))
        if unknown:
            raise UserError(f"model.{unknown[0]} is not a dimension of the {self.name} family")
        arch = PRESETS[preset].with_overrides(**overrides)
        arch.check()
        return arch

    def build(self, arch: TalkerArchitecture, *, dropout: float = 0.0):
        """A freshly initialised Talker."""
        from tempering.models.talker.model import Talker

        return Talker(arch, dropout=dropout)

    def to_hf_config(self, arch: TalkerArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict:
        """config.json: model_type and every field of the architecture."""
        return dataclass_to_config(arch, MODEL_TYPE, dropout=dropout, special=special)

    def from_hf_config(self, config: dict, *, where: str | None = None) -> TalkerArchitecture:
        """The architecture a config.json written by `to_hf_config` describes."""
        return dataclass_from_config(TalkerArchitecture, config, MODEL_TYPE, where=where)

    def count_parameters(self, arch: TalkerArchitecture) -> int:
        """Parameters of the model."""
        return count_parameters(arch)

    def count_non_embedding_parameters(self, arch: TalkerArchitecture) -> int:
        """Parameters outside the character embedding and the mel head."""
        return count_parameters(arch) - arch.vocab_size * arch.d_model - arch.n_mels * (arch.d_model + 1)

    def expected_tensors(self, arch: TalkerArchitecture) -> dict[str, tuple[int, ...]]:
        """Every tensor a checkpoint holds, by name and shape."""
        return expected_tensors(arch)

    def context_length(self, arch: TalkerArchitecture) -> None:
        """No fixed limit: rotary positions are made for each input's length."""
        return None

    def summary(self, arch: TalkerArchitecture) -> dict[str, Any]:
        """Columns of `temper presets`."""
        return {"vocab": arch.vocab_size, "d_model": arch.d_model, "layers": f"{arch.n_layers}+{arch.n_layers}",
                "heads": arch.n_heads, "d_ff": arch.d_ff, "input": "characters", "conv kernel": arch.conv_kernel or "-"}


TALKER = TalkerFamily()

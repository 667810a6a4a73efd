"""The `audio_encoder` family: speech recognition with CTC over characters (or a tokenizer's pieces).

This package's `__init__` is the family declaration (torch-free); the model is in `model.py`.
No `transformers` class has this layout (Wav2Vec2 reads raw waveforms, Speech2Text is an
encoder-decoder), so config.json holds the architecture's own fields under model_type
`tempering_audio_encoder`; the weights are plain safetensors with readable names.
"""

from __future__ import annotations

import re
from typing import Any

from tempering.errors import UserError
from tempering.models.audio_encoder.architecture import (
    MODEL_TYPE,
    PRESETS,
    AudioEncoderArchitecture,
    count_non_embedding_parameters,
    count_parameters,
    expected_tensors,
)
from tempering.models.dataclass_config import dataclass_from_config, dataclass_to_config
from tempering.models.family import ModelFamily, ParameterLayout, SpecialTokenIds

SUBSAMPLING_TENSORS = tuple(f"subsampling.{layer}.{kind}" for layer in ("conv1", "conv2", "out")
                            for kind in ("weight", "bias"))


class AudioEncoderFamily(ModelFamily):
    """Log-mel frames in, per-frame CTC logits out."""

    name = "audio_encoder"
    hf_model_types = (MODEL_TYPE,)
    # The subsampling convolutions play the part of the input embedding (frozen first, lowest layer-wise LR).
    layout = ParameterLayout(embeddings=SUBSAMPLING_TENSORS, head=("ctc_head.weight", "ctc_head.bias"),
                             final_norm=("encoder.norm.weight",), block_pattern=re.compile(r"encoder\.layers\.(\d+)\."))
    presets = PRESETS
    tasks = ("speech_recognition",)

    def model_type(self, arch: AudioEncoderArchitecture) -> str:
        """Always tempering_audio_encoder."""
        return MODEL_TYPE

    def architecture(self, preset: str, overrides: dict[str, Any]) -> AudioEncoderArchitecture:
        """The preset's architecture with the non-None overrides applied, checked."""
        unknown = sorted(set(overrides) - set(AudioEncoderArchitecture.__dataclass_fields__))
        if unknown:
            raise UserError(f"model.{unknown[0]} is not a dimension of the {self.name} family")
        arch = PRESETS[preset].with_overrides(**overrides)
        arch.check()
        return arch

    def build(self, arch: AudioEncoderArchitecture, *, dropout: float = 0.0):
        """A freshly initialised AudioEncoder."""
        from tempering.models.audio_encoder.model import AudioEncoder

        return AudioEncoder(arch, dropout=dropout)

    def to_hf_config(self, arch: AudioEncoderArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict:
        """config.json: model_type and every field of the architecture."""
        return dataclass_to_config(arch, MODEL_TYPE, dropout=dropout, special=special)

    def from_hf_config(self, config: dict, *, where: str | None = None) -> AudioEncoderArchitecture:
        """The architecture a config.json written by `to_hf_config` describes."""
        return dataclass_from_config(AudioEncoderArchitecture, config, MODEL_TYPE, where=where)

    def count_parameters(self, arch: AudioEncoderArchitecture) -> int:
        """Parameters of the model."""
        return count_parameters(arch)

    def count_non_embedding_parameters(self, arch: AudioEncoderArchitecture) -> int:
        """Parameters outside the CTC head."""
        return count_non_embedding_parameters(arch)

    def expected_tensors(self, arch: AudioEncoderArchitecture) -> dict[str, tuple[int, ...]]:
        """Every tensor a checkpoint holds, by name and shape."""
        return expected_tensors(arch)

    def context_length(self, arch: AudioEncoderArchitecture) -> None:
        """No fixed limit: rotary positions are made for each utterance's length."""
        return None

    def summary(self, arch: AudioEncoderArchitecture) -> dict[str, Any]:
        """Columns of `temper presets`."""
        return {"vocab": arch.vocab_size, "d_model": arch.d_model, "layers": arch.n_layers, "heads": arch.n_heads,
                "d_ff": arch.d_ff, "input": f"{arch.n_mels} mel, 4x conv", "conv kernel": arch.conv_kernel or "-"}


AUDIO_ENCODER = AudioEncoderFamily()

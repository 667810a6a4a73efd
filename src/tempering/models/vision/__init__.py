"""The `vision` family: an image captioner (ViT encoder + MLP projector + a decoder LM), checkpoints in LLaVA's layout.

This package's `__init__` is the family declaration (torch-free); the model is in `model.py`.
The language model comes from a decoder checkpoint (`--lm`) and is embedded in every vision
checkpoint, so a checkpoint is one self-contained, movable directory (see
`training/captioning_run.py` for why it embeds rather than references the LM).
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
from tempering.models.vision import hf_config
from tempering.models.vision.architecture import (
    OVERRIDE_KEYS,
    PRESETS,
    TOWER,
    VisionArchitecture,
    count_parameters,
    expected_tensors,
)


class VisionFamily(ModelFamily):
    """Image captioning: a SigLIP-style encoder whose projected patches prefix a Llama-style decoder's text."""

    name = "vision"
    hf_model_types = ("llava", hf_config.CONV_STEM_MODEL_TYPE)
    tasks = ("captioning",)
    # Blocks are the encoder's (freeze_first_blocks, layer-wise LR decay and unfreezing act on them);
    # the head is the projector, the part that turns image features into the LM's inputs.
    layout = ParameterLayout(
        embeddings=(f"{TOWER}embeddings.position_embedding.weight",),
        embedding_prefixes=(f"{TOWER}embeddings.patch_embedding.",),  # one conv, or a stem's several
        head=("model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.bias",
              "model.multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.bias"),
        final_norm=(),
        block_pattern=re.compile(r"model\.vision_tower\.vision_model\.encoder\.layers\.(\d+)\."))
    presets = PRESETS

    def model_type(self, arch: VisionArchitecture) -> str:
        """llava (the class transformers loads a checkpoint with), or Tempering's own type with a conv stem."""
        return hf_config.CONV_STEM_MODEL_TYPE if arch.patch_embed == "conv" else "llava"

    def architecture(self, preset: str, overrides: dict[str, Any]) -> VisionArchitecture:
        """The preset's encoder with model.* overrides (OVERRIDE_KEYS: the encoder's dimensions and patch_embed)."""
        unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
        if unknown:
            raise UserError(f"model.{unknown[0]} is not a dimension of the {self.name} family's encoder (its keys: "
                            f"{', '.join('model.' + k for k in OVERRIDE_KEYS)}); the language model comes from --lm")
        arch = PRESETS[preset].with_overrides(**overrides)
        arch.check()
        return arch

    def build(self, arch: VisionArchitecture, *, dropout: float = 0.0):
        """A freshly initialised CaptionModel (arch.lm must be set)."""
        from tempering.models.vision.model import CaptionModel

        return CaptionModel(arch, dropout=dropout)

    def to_hf_config(self, arch: VisionArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict:
        """config.json for LlavaForConditionalGeneration."""
        return hf_config.to_hf_config(arch, dropout=dropout, special=special)

    def from_hf_config(self, config: dict, *, where: str | None = None) -> VisionArchitecture:
        """The architecture of a LLaVA config.json (SigLIP tower, Llama text model)."""
        return hf_config.from_hf_config(config, where=where)

    def count_parameters(self, arch: VisionArchitecture) -> int:
        """Encoder and projector parameters, plus the LM's when known (a preset alone: the encoder only)."""
        return count_parameters(arch)

    def count_non_embedding_parameters(self, arch: VisionArchitecture) -> int:
        """Parameters outside the LM's token embedding and head."""
        if arch.lm is None:
            return count_parameters(arch)
        head = 0 if arch.lm.tie_embeddings else arch.lm.vocab_size * arch.lm.d_model
        return count_parameters(arch) - arch.lm.vocab_size * arch.lm.d_model - head

    def expected_tensors(self, arch: VisionArchitecture) -> dict[str, tuple[int, ...]]:
        """Every tensor a checkpoint holds, by name and shape."""
        return expected_tensors(arch)

    def optional_tensors(self, arch: VisionArchitecture) -> dict[str, tuple[int, ...]]:
        """A tied head some exporters write as its own tensor."""
        if arch.lm is not None and arch.lm.tie_embeddings:
            return {"lm_head.weight": (arch.lm.vocab_size, arch.lm.d_model)}
        return {}

    def generation_config(self, special: SpecialTokenIds) -> dict:
        """generation_config.json: captions end at the LM's end tokens."""
        return decoder_generation_config(special)

    def summary(self, arch: VisionArchitecture) -> dict[str, Any]:
        """Columns of `temper presets` (the LM's dimensions come from --lm)."""
        stem = " (conv stem)" if arch.patch_embed == "conv" else ""
        return {"image": f"{arch.image_size}px / {arch.patch_size}px patches{stem}", "d_model": arch.d_model,
                "layers": arch.n_layers, "heads": arch.n_heads, "d_ff": arch.d_ff,
                "context": f"{arch.num_patches} image positions + --lm"}


VISION = VisionFamily()

"""The model families Tempering knows, and how a preset name or a checkpoint finds its family.

Adding a family is one module (its `ModelFamily` subclass) plus one line in `FAMILIES`.
A checkpoint names its family in meta.json (`family`); older checkpoints and Hugging Face
directories are recognised by the `model_type` of their config.json.
"""

from __future__ import annotations

import difflib
from typing import Any

from tempering.errors import UserError
from tempering.models.audio_encoder import AUDIO_ENCODER
from tempering.models.encoder import ENCODER
from tempering.models.family import ModelFamily
from tempering.models.llama import LLAMA
from tempering.models.moe import MOE
from tempering.models.talker import TALKER
from tempering.models.vision import VISION

FAMILIES: dict[str, ModelFamily] = {
    LLAMA.name: LLAMA,
    MOE.name: MOE,
    VISION.name: VISION,
    ENCODER.name: ENCODER,
    AUDIO_ENCODER.name: AUDIO_ENCODER,
    TALKER.name: TALKER,
}


def get_family(name: str) -> ModelFamily:
    """The family registered under `name`; UserError lists the known ones."""
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_for_model_type(model_type: object, *, where: str | None = None) -> ModelFamily:
    """The family that reads a config.json `model_type`; UserError lists the supported ones."""
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    supported = ", ".join(t for family in FAMILIES.values() for t in family.hf_model_types)
    raise UserError(f"model_type is {model_type!r}; Tempering supports {supported}", where=where)


def family_of_checkpoint(hf_config: dict, meta: dict, *, where: str | None = None) -> ModelFamily:
    """The family a checkpoint holds: meta.json's `family`, else its config.json `model_type`."""
    if meta.get("family") is not None:
        if meta["family"] not in FAMILIES:
            raise UserError(f"meta.json names model family {meta['family']!r}, which this version of Tempering "
                            f"does not know (known: {', '.join(FAMILIES)})", where=where)
        return FAMILIES[meta["family"]]
    return family_for_model_type(hf_config.get("model_type"), where=where)


def find_preset(name: str) -> tuple[ModelFamily, Any]:
    """(family, architecture) of a preset name; UserError suggests the closest name."""
    for family in FAMILIES.values():
        if name in family.presets:
            return family, family.presets[name]
    names = [preset for family in FAMILIES.values() for preset in family.presets]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" — did you mean {close[0]}?" if close else ""
    raise UserError(f"unknown preset {name!r}{hint} (known: {', '.join(names)})")


def all_presets() -> list[tuple[str, ModelFamily, Any]]:
    """Every (preset name, family, architecture), family by family."""
    return [(name, family, arch) for family in FAMILIES.values() for name, arch in family.presets.items()]

"""config.json for families whose architecture has no `transformers` class: the dataclass's fields as they are.

The speech families (`audio_encoder`, `talker`) write `model_type` plus every field of their
architecture dataclass under its own name, and read it back checking that nothing is missing
or unknown, so a checkpoint's config.json alone rebuilds its model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tempering.errors import UserError


def dataclass_to_config(arch: Any, model_type: str, *, dropout: float, special: Any) -> dict:
    """`config.json` content: model_type, the architecture's fields, dropout and the special token ids."""
    return {"model_type": model_type, **dataclasses.asdict(arch), "dropout": dropout,
            "bos_token_id": special.bos_id, "eos_token_id": special.eos_ids[0] if special.eos_ids else None,
            "pad_token_id": special.pad_id}


def dataclass_from_config(cls: type, config: dict, model_type: str, *, where: str | None = None) -> Any:
    """The `cls` architecture a config.json describes; UserError naming a missing or mistyped key."""
    if config.get("model_type") != model_type:
        raise UserError(f"model_type is {config.get('model_type')!r}, expected {model_type!r}", where=where)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in config:
            values[field.name] = _tuple_if_list(config[field.name])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserError(f"config.json has no {field.name!r}, which a {model_type} model needs", where=where)
    try:
        arch = cls(**values)
        arch.check()
    except TypeError as error:
        raise UserError(f"config.json does not describe a {model_type} model ({error})", where=where) from None
    return arch


def _tuple_if_list(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value

"""Named record transforms: turn a user's own record layout into a supported chat format.

A transform is `fn(record: dict) -> dict` registered under a name with
`@register_transform("name")`; a dataset refers to it by that name
(`data.datasets.N.transform`), never by an import path. Two common layouts ship built in.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from tempering.errors import UserError

Transform = Callable[[dict], dict]

TRANSFORMS: dict[str, Transform] = {}


def register_transform(name: str) -> Callable[[Transform], Transform]:
    """Register the decorated `fn(record) -> record` under `name` (a name can be taken once)."""
    def decorate(fn: Transform) -> Transform:
        if name in TRANSFORMS and TRANSFORMS[name] is not fn:
            raise ValueError(f"transform {name!r} is already registered (by {TRANSFORMS[name].__qualname__})")
        TRANSFORMS[name] = fn
        return fn
    return decorate


def get_transform(name: str) -> Transform:
    """Return the transform registered as `name`; UserError suggests the closest name if unknown."""
    if name in TRANSFORMS:
        return TRANSFORMS[name]
    close = difflib.get_close_matches(name, TRANSFORMS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    known = ", ".join(sorted(TRANSFORMS)) or "none"
    raise UserError(f"unknown transform {name!r}; {hint}registered transforms: {known}")


SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "tool": "tool", "function_response": "tool"}


@register_transform("sharegpt")
def sharegpt_to_messages(record: dict) -> dict:
    """ShareGPT {"conversations": [{"from": "human"|"gpt"|..., "value"}]} -> messages."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise ValueError("sharegpt record has no 'conversations' list")
    messages = []
    for index, turn in enumerate(turns, 1):
        speaker = turn.get("from") if isinstance(turn, dict) else None
        if speaker not in SHAREGPT_ROLES:
            raise ValueError(f"conversation turn {index} has speaker {speaker!r}; "
                             f"expected one of {', '.join(SHAREGPT_ROLES)}")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return {"messages": messages, **({"tools": record["tools"]} if "tools" in record else {})}


@register_transform("prompt_completion")
def prompt_completion_to_messages(record: dict) -> dict:
    """{"prompt", "completion"} (plain-text pairs) -> a user turn and an assistant turn."""
    if not isinstance(record.get("prompt"), str) or not isinstance(record.get("completion"), str):
        raise ValueError("prompt_completion record needs string 'prompt' and 'completion' fields")
    return {"messages": [{"role": "user", "content": record["prompt"]},
                         {"role": "assistant", "content": record["completion"]}]}

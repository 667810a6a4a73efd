"""Which task a pretrain or post-train run trains: the config's `task`, checked against the model family."""

from __future__ import annotations

from typing import Any

from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.models.family import ModelFamily

FLAGS = {"causal_lm": "--objective clm", "masked_lm": "--objective mlm", "token_classification": "--task ner"}


def resolve_task(config: Config, family: ModelFamily, arch: Any) -> str:
    """`task`, or the family's default for `arch` when it is auto; UserError when the family cannot train it."""
    task = family.default_task(arch) if config.task == "auto" else config.task
    if task not in family.tasks:
        can = ", ".join(f"{t} ({FLAGS[t]})" for t in family.tasks)
        raise UserError(f"task {task} ({FLAGS[task]}) needs another kind of model: the {family.name} family trains "
                        f"{can}; choose a preset or checkpoint of a family that has it (`temper presets`)")
    return task

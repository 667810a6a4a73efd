"""The objective registry: a name in a config or checkpoint → the `Objective` class that computes it.

Adding an objective is one module with an `Objective` subclass (see `training/objective.py`)
plus one line here.
"""

from __future__ import annotations

from tempering.errors import UserError
from tempering.training.captioning import Captioning
from tempering.training.causal_lm import CausalLM, ChatSft
from tempering.training.ctc import Ctc
from tempering.training.objective import Objective
from tempering.training.preference import Dpo
from tempering.training.tts import Tts

OBJECTIVES: dict[str, type[Objective]] = {
    CausalLM.name: CausalLM,
    ChatSft.name: ChatSft,
    Dpo.name: Dpo,
    Captioning.name: Captioning,
    Ctc.name: Ctc,
    Tts.name: Tts,
}


def objective_class(name: str) -> type[Objective]:
    """The objective registered under `name`; UserError lists the known ones."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]

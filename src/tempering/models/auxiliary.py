"""Auxiliary losses a model adds to its training objective, and how an objective asks for them.

Some models carry losses of their own beside the objective's (a mixture-of-experts router's
load-balancing and z-losses). Such a model implements `hidden_states_and_auxiliary(input_ids,
**kwargs) -> (hidden, AuxiliaryLosses)`, computed in the same forward pass, so nothing is kept
on the module between calls (no hidden state, safe under gradient accumulation and
torch.compile). Every objective gets its hidden states through `hidden_states_and_auxiliary`
below and adds what comes back; a model without auxiliary losses simply has none.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class AuxiliaryLosses(NamedTuple):
    """One forward pass's auxiliary losses (coefficients applied) and what to log about them."""

    loss: torch.Tensor  # 0-dim: the weighted sum to add to the objective, a mean per token of the pass
    metrics: dict[str, torch.Tensor]  # 0-dim, detached: each a mean per token of the pass


def hidden_states_and_auxiliary(model: nn.Module, input_ids: torch.Tensor,
                                **kwargs) -> tuple[torch.Tensor, AuxiliaryLosses | None]:
    """(final hidden states, auxiliary losses or None) of one forward pass of `model`."""
    forward = getattr(model, "hidden_states_and_auxiliary", None)
    if forward is None:
        return model.hidden_states(input_ids, **kwargs), None
    return forward(input_ids, **kwargs)

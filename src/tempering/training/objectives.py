"""Objectives: a batch in, (summed loss, number of supervised tokens) out.

Returning the *sum* lets the loop divide once by the supervised tokens of the whole
optimizer step (all micro-batches), so accumulation never averages means.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tempering.models.chunked_loss import chunked_cross_entropy

# (model, batch of device tensors) -> (summed loss, units, [extra metrics dict])
Objective = Callable[..., tuple]


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss summed over every position of packed (B, T+1) token windows."""
    tokens = batch["tokens"]
    inputs, labels = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
    hidden = model.hidden_states(inputs)  # (B, T, D)
    return chunked_cross_entropy(hidden, model.lm_head.weight, labels)


def count_window_tokens(batch: dict[str, np.ndarray]) -> int:
    """Positions that carry a loss in a (B, T+1) window batch (every one, for causal LM)."""
    tokens = batch["tokens"]
    return tokens.shape[0] * (tokens.shape[1] - 1)


OBJECTIVES: dict[str, Objective] = {"clm": causal_lm_loss}

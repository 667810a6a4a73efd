"""Validation loss and perplexity over packed token windows."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def evaluate_loss(model: nn.Module, sets: list, objective, *, batch_size: int, device: torch.device,
                  max_batches: int | None = None,
                  autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> dict:
    """Unit-weighted mean loss and perplexity over every batch of every set, in order.

    A set is anything with `eval_batches(batch_size)` yielding numpy batch dicts;
    `max_batches` caps the batches per set. Extra objective metrics (DPO), sums over units
    like the loss, are returned as means per unit.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_units = 0
    extras: dict[str, torch.Tensor] = {}
    for eval_set in sets:
        for index, batch in enumerate(eval_set.eval_batches(batch_size)):
            if max_batches is not None and index >= max_batches:
                break
            tensors = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if isinstance(v, np.ndarray)}
            with autocast():
                loss_sum, num_units, *rest = objective(model, tensors)
            total_loss += loss_sum.double()
            total_units += int(num_units)
            for name, value in (rest[0] if rest else {}).items():
                extras[name] = extras.get(name, 0) + value.double()
    model.train(was_training)
    loss = (total_loss / max(total_units, 1)).item()
    result = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": total_units}
    result.update({name: (value / max(total_units, 1)).item() for name, value in extras.items()})
    return result

"""The validation pass: an objective's unit-weighted loss (and metrics) over every batch of the validation sets."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn

from tempering.training.objective import Objective


@torch.no_grad()
def evaluate(model: nn.Module, sets: list, objective: Objective, *, batch_size: int, device: torch.device,
             max_batches: int | None = None,
             autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
             call: Callable | None = None, interrupted: Callable[[], bool] | None = None) -> dict | None:
    """Unit-weighted mean loss (and perplexity where it means something) over every batch of every set, in order.

    A set is anything with `eval_batches(batch_size)` yielding numpy batch dicts;
    `max_batches` caps the batches per set. The result holds `loss`, `ppl` when the
    objective has one, the number of units under the objective's unit name (`tokens`,
    `pairs`, ...), the objective's extra metrics as means per unit, and the metrics of its
    `split_metric` over every batch (entity F1, ...). `call(batch, predict=...)`, when given,
    runs the objective through FSDP's wrapped module instead of on `model` directly.
    `interrupted()` is asked before every batch (a stop signal); when it says yes the pass is
    abandoned and None returned, so a preempted run checkpoints within one batch, not one split.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_units = 0
    extras: dict[str, torch.Tensor] = {}
    split_metric = objective.split_metric()
    for eval_set in sets:
        for index, batch in enumerate(eval_set.eval_batches(batch_size)):
            if max_batches is not None and index >= max_batches:
                break
            if interrupted is not None and interrupted():
                model.train(was_training)
                return None
            tensors = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if isinstance(v, np.ndarray)}
            with autocast():
                if split_metric is None:
                    result = call(tensors) if call is not None else objective(model, tensors)
                    predictions = None
                else:
                    result, predictions = call(tensors, predict=True) if call is not None else \
                        objective.predict(model, tensors)
            total_loss += result.loss_sum.double()
            total_units += int(result.num_units)
            for name, value in result.metrics.items():
                extras[name] = extras.get(name, 0) + value.double()
            if split_metric is not None:
                split_metric.update(tensors, predictions)
    model.train(was_training)
    loss = (total_loss / max(total_units, 1)).item()
    values = {"loss": loss}
    if objective.perplexity:
        values["ppl"] = math.exp(min(loss, 50.0))
    values[objective.unit] = total_units
    values.update({name: (value / max(total_units, 1)).item() for name, value in extras.items()})
    if split_metric is not None:
        values.update(split_metric.compute())
    return values

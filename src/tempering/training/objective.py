"""The objective contract: what every training objective returns and declares.

An objective turns (model, batch) into a `LossResult` — the loss *summed* over the
batch's supervised units, how many units that is, and extra metrics summed over the same
units — so the loop divides once by the units of the whole optimizer step and gradient
accumulation never averages means. It declares its unit (tokens, pairs, frames, labels),
whether perplexity means anything for it, and the validation metric that picks `best/`
and drives early stopping, with its direction (lowest loss, highest F1, lowest WER).
Adding an objective is one module with an `Objective` subclass plus a line in
`training/objectives.py`.

Some validation metrics are not sums over units — entity-level F1 (NER), word error rate
(speech) — and need every prediction of the validation split first. For those an objective
hands the validation pass a fresh `SplitMetric` per split (`split_metric()`) and implements
`predict` (the loss and the predictions of one batch); the pass calls `update` with every
batch's predictions and merges `compute()`'s values into the split's record, where
`best_metric` can name them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from tempering.models.auxiliary import AuxiliaryLosses

# A batch as the data side hands it over: arrays (None when unused, e.g. no document mask),
# plus optionally "num_tokens" (an int) when the loss unit is not the token (DPO: pairs).
NumpyBatch = dict[str, "np.ndarray | int | None"]
TensorBatch = dict[str, torch.Tensor]


class LossResult(NamedTuple):
    """One batch's loss: summed over its supervised units, their count, and extra metrics summed alike."""

    loss_sum: torch.Tensor  # 0-dim
    num_units: torch.Tensor | int
    metrics: dict[str, torch.Tensor] = {}  # never mutated: a shared empty default is safe


class SplitMetric(Protocol):
    """Metrics over a whole validation split (entity F1, WER), accumulated batch by batch."""

    def update(self, batch: TensorBatch, predictions: object) -> None:
        """Take in one validation batch and the objective's predictions on it (`Objective.predict`)."""

    def compute(self) -> dict[str, float]:
        """The metrics over every batch taken in (name -> value)."""


# The one metric the loop also trains on: the model's own auxiliary losses (a mixture of experts'
# router losses, coefficients applied), summed over the units like the loss. It is added to the
# loss for the backward pass and reported beside it, never inside it (loss and ppl stay comparable).
AUXILIARY_LOSS = "auxiliary_loss"


def with_auxiliary(result: LossResult, auxiliary: AuxiliaryLosses | None, num_units) -> LossResult:
    """`result` plus a forward pass's auxiliary losses and metrics (means per token), weighted by its units.

    Weighting each micro-batch's means by its units keeps the contract: the loop divides by
    the units of the whole step, so accumulated micro-batches train like one big batch.
    """
    if auxiliary is None:
        return result
    metrics = {**result.metrics, AUXILIARY_LOSS: auxiliary.loss * num_units,
               **{name: value * num_units for name, value in auxiliary.metrics.items()}}
    return result._replace(metrics=metrics)


@dataclass(frozen=True)
class BestMetric:
    """The validation metric that picks best/ and drives early stopping, and which way is better."""

    name: str = "loss"
    mode: Literal["min", "max"] = "min"

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` is strictly better than the best so far (None: nothing yet)."""
        if best is None:
            return not math.isnan(value)
        return value < best if self.mode == "min" else value > best


class Objective:
    """Base class of training objectives; subclasses set the class attributes and implement `__call__`."""

    name: ClassVar[str]
    unit: ClassVar[str]  # what a supervised unit is: "tokens", "pairs", "frames", "labels"
    perplexity: ClassVar[bool]  # whether exp(loss) is a perplexity worth reporting
    best_metric: BestMetric = BestMetric()

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """The batch's summed loss, its supervised units and extra metrics."""
        raise NotImplementedError

    def count_units(self, batch: NumpyBatch) -> int:
        """Supervised units in a host-side batch (before it goes to the device): the loss normaliser."""
        raise NotImplementedError

    def split_metric(self) -> SplitMetric | None:
        """A fresh accumulator for metrics over a whole validation split, or None (every metric sums over units)."""
        return None

    def predict(self, model: nn.Module, batch: TensorBatch) -> tuple[LossResult, object]:
        """The batch's LossResult and what this objective's SplitMetric scores (e.g. (B, T) predicted label ids)."""
        return self(model, batch), None

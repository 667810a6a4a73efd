"""The AdamW optimizer and the learning-rate schedules.

The schedule is a pure function of the optimizer step, so resuming needs only the
step number and no scheduler object state.
"""

from __future__ import annotations

import math

from torch import nn

from tempering.config.schema import TrainingConfig
from tempering.models.family import ParameterLayout
from tempering.training.adamw import AdamW
from tempering.training.trainable import build_param_groups


def build_optimizer(model: nn.Module, training: TrainingConfig, layout: ParameterLayout) -> AdamW:
    """AdamW over the trainable parameters, grouped by weight decay and LR scale (see trainable.py)."""
    groups = build_param_groups(model, training, layout)
    return AdamW(groups, lr=training.learning_rate, betas=(training.adam_beta1, training.adam_beta2),
                 eps=training.adam_eps)


def learning_rate_at(step: int, total_steps: int, training: TrainingConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    peak = training.learning_rate
    warmup = min(training.warmup_steps, total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * training.min_lr_ratio
    if training.lr_schedule == "constant":
        return peak
    if training.lr_schedule == "wsd":
        decay_steps = max(1, int(round(training.decay_fraction * total_steps)))
        decay_start = max(warmup, total_steps - decay_steps)
        if step < decay_start:
            return peak
        progress = (step - decay_start + 1) / max(1, total_steps - decay_start)
        return peak - (peak - floor) * min(1.0, progress)
    progress = (step - warmup + 1) / max(1, total_steps - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: AdamW, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)

"""Learning-rate schedules."""

from __future__ import annotations

import pytest

from tempering.config import load_config
from tempering.training.optim import learning_rate_at


def training(*overrides):
    return load_config(None, list(overrides)).training


def test_cosine_warms_up_then_decays_to_the_floor():
    t = training("training.learning_rate=1.0", "training.warmup_steps=4", "training.min_lr_ratio=0.1")
    lrs = [learning_rate_at(s, 20, t) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[-1] == pytest.approx(0.1)


def test_constant_and_wsd():
    t = training("training.learning_rate=2.0", "training.lr_schedule=constant", "training.warmup_steps=2")
    assert [learning_rate_at(s, 10, t) for s in range(4)] == [1.0, 2.0, 2.0, 2.0]
    w = training("training.learning_rate=1.0", "training.lr_schedule=wsd", "training.decay_fraction=0.5",
                 "training.min_lr_ratio=0.0")
    lrs = [learning_rate_at(s, 10, w) for s in range(10)]
    assert lrs[:5] == [1.0] * 5
    assert lrs[5:] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])

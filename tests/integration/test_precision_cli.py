"""`training.precision`: bf16 tracks fp32, and `auto` is resolved once and frozen into the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tempering.training.device import resolve_precision


def train_losses(run: Path) -> dict[int, float]:
    """Per-step training loss from metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r.get("split") == "train"}


def test_bf16_tracks_fp32_over_the_first_50_steps_of_tiny(pretrain, tmp_path):
    for precision in ("fp32", "bf16"):
        pretrain(tmp_path / precision, "--precision", precision, "--max-steps", "50", "training.eval_steps=50")
    fp32, bf16 = train_losses(tmp_path / "fp32"), train_losses(tmp_path / "bf16")
    assert sorted(fp32) == sorted(bf16) == list(range(1, 51))
    relative = [abs(bf16[step] - fp32[step]) / fp32[step] for step in fp32]
    assert sum(relative) / len(relative) <= 0.02
    assert bf16 != fp32  # autocast really computed in bf16


def test_auto_is_frozen_into_the_run_and_kept_on_resume(pretrain, tmp_path):
    expected = resolve_precision(torch.device("cpu"), "auto")
    run = pretrain(tmp_path / "auto", "--max-steps", "2")
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["training"]["precision"]
    assert saved == expected, run.stdout
    # A run frozen with the other choice (as if started on other hardware) resumes with `auto` and keeps it.
    other = "fp32" if expected == "bf16" else "bf16"
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    pretrain(reference, "--precision", other, "--max-steps", "4", "training.save_steps=2")
    pretrain(resumed, "--precision", other, "--max-steps", "4", "training.save_steps=2", "debug.kill_at_step=3",
             check=False)
    assert not (resumed / "final").exists()
    pretrain(resumed, "--max-steps", "4", "training.save_steps=2")
    assert yaml.safe_load((resumed / "config.yaml").read_text())["training"]["precision"] == other
    assert train_losses(resumed) == pytest.approx(train_losses(reference), rel=0, abs=0)

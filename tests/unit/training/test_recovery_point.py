"""The start-of-run recovery point: restored exactly, held in an unlinked memory-mapped file, in memory as a fallback."""

from __future__ import annotations

import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tempering.training.adamw import AdamW
from tempering.training.recovery_point import capture_start, restore_start


@dataclass
class _TrainState:
    step: int


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 64)

    def export_state_dict(self):
        return self.state_dict()

    def load_exported_state_dict(self, weights):
        self.load_state_dict(weights)


def _step(model, optimizer):
    model.linear(torch.randn(8, 64)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _trained():
    torch.manual_seed(0)
    model = _Model()
    optimizer = AdamW([{"params": model.parameters()}], lr=1e-2)
    _step(model, optimizer)  # the optimizer now has state, as a post-train run that kept it does
    return model, optimizer


def _state(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {k: v.clone() for k, v in optimizer.state[model.linear.weight].items()}, torch.rand(3))


def _assert_equal(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert torch.equal(a[2], b[2])


@pytest.mark.parametrize("on_disk", [True, False])
def test_restore_brings_back_weights_optimizer_state_and_rng(tmp_path, on_disk):
    model, optimizer = _trained()
    folder = tmp_path if on_disk else tmp_path / "missing"  # a folder that is not there: kept in memory
    start = capture_start(model, optimizer, _TrainState(1), folder)
    expected = _state(model, optimizer)
    torch.manual_seed(123)
    for _ in range(3):
        _step(model, optimizer)
    state = restore_start(model, optimizer, start)
    _assert_equal(_state(model, optimizer), expected)
    assert state == _TrainState(1) and state is not start["state"]
    _step(model, optimizer)  # the optimizer trains on from its own copies, not from the captured tensors
    state = restore_start(model, optimizer, start)
    _assert_equal(_state(model, optimizer), expected)


def test_the_tensors_live_in_an_unlinked_file_not_in_the_run_dir(tmp_path):
    model, optimizer = _trained()
    start = capture_start(model, optimizer, _TrainState(1), tmp_path)
    assert list(tmp_path.iterdir()) == []
    if sys.platform.startswith("linux"):
        maps = Path("/proc/self/maps").read_text()
        assert f"{tmp_path}/.recovery-point-" in maps and "(deleted)" in maps
    assert start["weights"]["linear.weight"].data_ptr() != model.linear.weight.data_ptr()


def test_a_folder_that_refuses_the_file_warns_and_keeps_the_copy_in_memory(tmp_path, capsys):
    model, optimizer = _trained()
    start = capture_start(model, optimizer, _TrainState(1), tmp_path / "missing")
    assert "stays in memory" in capsys.readouterr().err
    with torch.no_grad():
        model.linear.weight.zero_()
    assert start["weights"]["linear.weight"].abs().sum() > 0  # a copy, not a view of the live weights


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE write failures are Linux behaviour")
def test_a_write_that_fails_midway_warns_keeps_the_copy_in_memory_and_leaves_no_file(tmp_path, capsys):
    model, optimizer = _trained()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # the file outgrows this: a full disk, as torch sees it
    try:
        start = capture_start(model, optimizer, _TrainState(1), tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert "File too large); it stays in memory" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    expected = _state(model, optimizer)
    for _ in range(2):
        _step(model, optimizer)
    restore_start(model, optimizer, start)
    _assert_equal(_state(model, optimizer), expected)

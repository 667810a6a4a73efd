"""Resolving a checkpoint dir or run dir to one checkpoint."""

import os

import pytest

from tempering.checkpoint.io import load_checkpoint, save_checkpoint
from tempering.checkpoint.paths import newest_periodic, resolve_checkpoint, step_dir_name
from tempering.errors import UserError


def test_step_dir_name_pads_to_eight_digits():
    assert step_dir_name(1500) == "step-00001500"
    assert step_dir_name(123456789) == "step-123456789"


@pytest.fixture
def run_dir(tmp_path, payload):
    """A run with two periodic checkpoints (10, 200), best at 100 and final at 250."""
    run = tmp_path / "run"
    for step in (10, 200):
        save_checkpoint(run / "checkpoints" / step_dir_name(step), **payload(step))
    save_checkpoint(run / "best", **payload(100))
    save_checkpoint(run / "final", **payload(250))
    (run / "config.yaml").write_text("model: tiny\n")
    return run


def test_run_dir_resolves_best_then_final_then_newest_step(run_dir):
    assert resolve_checkpoint(run_dir) == run_dir / "best"
    (run_dir / "best").rename(run_dir / "best-moved")
    assert resolve_checkpoint(run_dir) == run_dir / "final"
    (run_dir / "final").rename(run_dir / "final-moved")
    # step-00000010 touched last: the newest is chosen by step number, not mtime
    os.utime(run_dir / "checkpoints" / "step-00000010", (4e9, 4e9))
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoints" / "step-00000200"
    assert newest_periodic(run_dir) == run_dir / "checkpoints" / "step-00000200"


def test_checkpoint_dir_is_returned_as_is(run_dir):
    periodic = run_dir / "checkpoints" / "step-00000010"
    assert resolve_checkpoint(periodic, select="final") == periodic


def test_latest_compares_final_with_periodic_by_step(run_dir, payload):
    assert resolve_checkpoint(run_dir, select="latest") == run_dir / "final"
    save_checkpoint(run_dir / "checkpoints" / step_dir_name(300), **payload(300))
    assert resolve_checkpoint(run_dir, select="latest") == run_dir / "checkpoints/step-00000300"


def test_select_final_does_not_fall_back(run_dir):
    assert resolve_checkpoint(run_dir, select="final") == run_dir / "final"
    (run_dir / "final").rename(run_dir / "final-moved")
    with pytest.raises(UserError, match=r"looked for final/ because checkpoint select is 'final'"):
        resolve_checkpoint(run_dir, select="final")


def test_parked_checkpoint_is_used_while_its_replacement_is_missing(run_dir):
    (run_dir / "best").rename(run_dir / ".old-best")  # a save killed mid-replace
    assert resolve_checkpoint(run_dir) == run_dir / ".old-best"


def test_load_checkpoint_accepts_a_run_dir(run_dir):
    assert load_checkpoint(run_dir).step == 100
    assert load_checkpoint(run_dir, select="latest").step == 250


def test_run_dir_without_checkpoints_lists_its_contents(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "config.yaml").write_text("")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(UserError) as caught:
        resolve_checkpoint(run)
    assert str(caught.value) == (
        f"no checkpoint found in {run} (looked for best/, final/ and checkpoints/step-*/); "
        "it contains: config.yaml, logs/, metrics.jsonl"
    )
    with pytest.raises(UserError, match=r"it is empty"):
        resolve_checkpoint(run / "logs")


def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint .*absent does not exist"):
        resolve_checkpoint(tmp_path / "absent")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match=r"weights.bin is a file; expected a checkpoint or run"):
        resolve_checkpoint(tmp_path / "weights.bin")

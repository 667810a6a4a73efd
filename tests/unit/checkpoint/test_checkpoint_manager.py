"""Periodic retention, best/final, resume selection and save_dir checks."""

import errno

import pytest
import torch

from tempering.checkpoint.io import load_checkpoint
from tempering.checkpoint.manager import CheckpointManager
from tempering.errors import UserError


def _periodic_names(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


@pytest.mark.parametrize(
    ("limit", "kept"), [(1, ["step-00000040"]), (2, ["step-00000030", "step-00000040"])]
)
def test_keeps_newest_periodic_checkpoints(tmp_path, payload, limit, kept):
    manager = CheckpointManager(tmp_path / "run", save_total_limit=limit)
    for step in (10, 20, 30, 40):
        path = manager.save_periodic(step, **payload(step))
        assert path == tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
    assert _periodic_names(tmp_path / "run") == kept
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / kept[-1]).step == 40


def test_periodic_step_fills_and_must_match_meta(tmp_path, payload):
    manager = CheckpointManager(tmp_path / "run")
    args = payload(5)
    del args["meta"]["step"]
    assert load_checkpoint(manager.save_periodic(5, **args)).step == 5
    with pytest.raises(ValueError, match=r"meta step 6 differs from the periodic step 7"):
        manager.save_periodic(7, **payload(6))


def test_best_and_final_replace_in_place(tmp_path, payload):
    manager = CheckpointManager(tmp_path / "run")
    manager.save_best(**payload(1))
    assert manager.save_best(**payload(2)) == tmp_path / "run" / "best"
    assert manager.save_final(**payload(3)) == tmp_path / "run" / "final"
    best = load_checkpoint(tmp_path / "run" / "best")
    assert best.step == 2
    assert torch.equal(best.load_weights()["model.embed_tokens.weight"], torch.full((8, 4), 2.0))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best", "final"]


def test_latest_resumable_compares_steps_across_kinds(tmp_path, payload):
    run = tmp_path / "run"
    manager = CheckpointManager(run, save_total_limit=2)
    assert manager.latest_resumable() is None
    manager.save_best(**payload(30))
    manager.save_periodic(20, **payload(20))
    assert manager.latest_resumable() == run / "best"
    manager.save_periodic(30, **payload(30))
    assert manager.latest_resumable() == run / "checkpoints" / "step-00000030"  # tie: periodic
    manager.save_final(**payload(35))
    assert manager.latest_resumable() == run / "final"
    manager.save_final(**payload(40, resumable=False))  # e.g. an export without trainer state
    assert manager.latest_resumable() == run / "checkpoints" / "step-00000030"


def test_checkpoints_none_resumable_refuse_a_fresh_start(tmp_path, payload):
    manager = CheckpointManager(tmp_path / "run")
    manager.save_final(**payload(9, resumable=False))
    with pytest.raises(
        UserError, match=r"holds checkpoints \(final\) but none has trainer_state.pt"
    ):
        manager.latest_resumable()


def test_latest_resumable_names_a_corrupt_meta(tmp_path, payload):
    manager = CheckpointManager(tmp_path / "run")
    manager.save_periodic(3, **payload(3))
    (tmp_path / "run" / "checkpoints" / "step-00000003" / "meta.json").write_text("{")
    with pytest.raises(UserError, match=r"step-00000003/meta.json is corrupt or truncated"):
        manager.latest_resumable()


def test_save_dir_that_is_a_file(tmp_path):
    (tmp_path / "run").write_text("notes")
    with pytest.raises(UserError, match=r"^save_dir .*run is a file; set save_dir to a directory$"):
        CheckpointManager(tmp_path / "run")
    with pytest.raises(UserError, match=r"^save_dir .*run/sub: .*run is a file"):
        CheckpointManager(tmp_path / "run" / "sub")
    assert (tmp_path / "run").read_text() == "notes"


def test_disk_full_on_periodic_names_the_previous_one(tmp_path, payload, monkeypatch):
    run = tmp_path / "run"
    manager = CheckpointManager(run)
    manager.save_periodic(1, **payload(1))

    def full_disk_save(obj, handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(UserError) as caught:
        manager.save_periodic(2, **payload(2))
    previous = run / "checkpoints" / "step-00000001"
    assert f"; the previous checkpoint {previous} is intact;" in str(caught.value)
    assert _periodic_names(run) == ["step-00000001"]
    assert load_checkpoint(previous).load_trainer_state()["step"] == 1

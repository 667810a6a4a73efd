"""Repairing what a killed save leaves behind, including real SIGKILLs mid-write."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import load_checkpoint, save_checkpoint
from tempering.checkpoint.manager import CheckpointManager


def _weights_value(folder: Path) -> float:
    weights = load_checkpoint(folder).load_weights()["model.embed_tokens.weight"]
    assert torch.equal(weights, torch.full_like(weights, weights[0, 0]))
    return float(weights[0, 0])


def test_killed_between_the_two_renames_restores_the_old_one(tmp_path, payload):
    run = tmp_path / "run"
    save_checkpoint(run / "final", **payload(1))
    # The state a kill leaves after final/ was parked and before the new one moved in.
    (run / "final").rename(run / ".old-final")
    save_checkpoint(run / ".tmp-final-4242", **payload(2))

    repairs = recover_interrupted_saves(run)

    assert repairs == [
        f"restored {run / 'final'} from {run / '.old-final'}: a save was interrupted",
        f"removed {run / '.tmp-final-4242'}, an unfinished save or delete",
    ]
    assert sorted(p.name for p in run.iterdir()) == ["final"]
    assert load_checkpoint(run / "final").step == 1
    assert _weights_value(run / "final") == 1.0


def test_killed_before_the_parked_copy_was_deleted_keeps_the_new_one(tmp_path, payload):
    run = tmp_path / "run"
    save_checkpoint(run / "best", **payload(2))
    save_checkpoint(run / ".old-best", **payload(1))
    (run / ".old-best" / "model.safetensors").unlink()  # deletion was under way

    assert recover_interrupted_saves(run) == [
        f"removed {run / '.old-best'}, left behind after {run / 'best'} was replaced"
    ]
    assert load_checkpoint(run / "best").step == 2


def test_killed_while_pruning_or_writing_periodic(tmp_path, payload):
    run = tmp_path / "run"
    manager = CheckpointManager(run)
    manager.save_periodic(3, **payload(3))
    (run / "checkpoints" / ".del-step-00000001").mkdir()
    (run / "checkpoints" / ".tmp-step-00000004-77").mkdir()
    (run / "checkpoints" / ".tmp-notes.txt").write_text("a file, not ours")

    assert len(manager.recover()) == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        ".tmp-notes.txt",
        "step-00000003",
    ]
    assert manager.latest_resumable() == run / "checkpoints" / "step-00000003"


def test_nothing_to_recover(tmp_path):
    assert recover_interrupted_saves(tmp_path / "missing") == []


# Runs in a subprocess so torch is imported once there; it forks writers and SIGKILLs them.
_KILL_HARNESS = textwrap.dedent(
    """
    import json, os, random, signal, sys, time
    from pathlib import Path

    import torch

    from tempering.checkpoint.atomic import recover_interrupted_saves
    from tempering.checkpoint.io import load_checkpoint, save_checkpoint

    torch.set_num_threads(1)  # no thread pool to inherit across fork
    run, num_kills = Path(sys.argv[1]), int(sys.argv[2])
    weights = torch.empty(5_000_000)  # 20 MB

    def save(version):
        weights.fill_(float(version))
        save_checkpoint(run / "final", weights={"w": weights}, hf_config={"v": version},
                        meta={"step": version}, trainer_state={"version": version})

    def saved_step():
        try:
            return json.loads((run / "final" / "meta.json").read_text())["step"]
        except (OSError, ValueError):  # mid-swap: final/ parked or being written
            return 0

    save(0)
    rng = random.Random(int(sys.argv[3]))
    for kill in range(num_kills):
        child = os.fork()
        if child == 0:
            version = (kill + 1) * 1000
            while True:
                version += 1
                save(version)
        if kill == 0:  # however loaded the machine, let one writer finish a save before its kill
            deadline = time.time() + 50
            while time.time() < deadline and saved_step() == 0:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.25))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        repairs = recover_interrupted_saves(run)
        checkpoint = load_checkpoint(run / "final")
        loaded = checkpoint.load_weights()["w"]
        version = checkpoint.step
        print(json.dumps({
            "repairs": len(repairs),
            "step": version,
            "config": checkpoint.hf_config["v"],
            "trainer_state": checkpoint.load_trainer_state()["version"],
            "weights_match": bool(torch.equal(loaded, torch.full_like(loaded, float(version)))),
            "entries": sorted(p.name for p in run.iterdir()),
        }), flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_during_saves_always_leaves_a_complete_checkpoint(tmp_path):
    num_kills = 4
    result = subprocess.run(
        [sys.executable, "-c", _KILL_HARNESS, str(tmp_path / "run"), str(num_kills), "7"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    trials = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(trials) == num_kills
    for kill, trial in enumerate(trials):
        # final/ holds exactly one version a writer produced: weights, config, meta agree
        assert trial["step"] == trial["config"] == trial["trainer_state"]
        assert trial["weights_match"]
        assert trial["step"] == 0 or trial["step"] // 1000 <= kill + 1
        assert trial["entries"] == ["final"]
    # Writers spend nearly all their time mid-save, so kills leave debris to clean up,
    # and at least one writer finished a save before being killed.
    assert sum(trial["repairs"] for trial in trials) >= 1
    assert any(trial["step"] > 0 for trial in trials)

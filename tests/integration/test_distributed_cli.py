"""Data-parallel training through the real CLI under `torchrun` (gloo on CPU): DDP and FSDP2 train
the same steps as one process with the same global batch, and resume after a rank is killed — at
the same world size bit-exactly, at another within 1e-3 (FSDP's periodic checkpoints are DCP shards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TEST_CACHE_DIR
from tests.integration.conftest import TINY_RUN

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend for torch.distributed")

STEPS = 10
# The global batch is 16 sequences: one process accumulates 4 micro-batches of 4, two ranks 2 each.
# fp32: the tolerances below are fp32's (precision auto would pick bf16 on CPUs with AMX).
GLOBAL_BATCH = [f"--max-steps={STEPS}", "training.effective_batch_size=16", "training.eval_steps=5",
                "--precision", "fp32"]


def launch(workspace: Path, save_dir: Path, processes: int, *extra: str, check: bool = True):
    """`temper pretrain` on the tiny preset: alone, or under torchrun with `processes` ranks."""
    command = [sys.executable, "-m", "tempering"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "tempering"]
    env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
           "TEMPERING_CACHE_DIR": str(TEST_CACHE_DIR)}
    args = ["pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", save_dir,
            *TINY_RUN, *GLOBAL_BATCH, *extra]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{processes} process(es) failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def step_losses(run: Path) -> dict[int, float]:
    """Per-step training loss from metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r.get("split") == "train"}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    """The final checkpoint's tensors."""
    return load_file(run / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def single_run(workspace, tmp_path_factory) -> Path:
    """The reference: one process, the same global batch through gradient accumulation."""
    run = tmp_path_factory.mktemp("single") / "run"
    launch(workspace, run, 1)
    return run


def assert_losses_close(run: Path, reference: Path, rel: float, steps=range(1, STEPS + 1)) -> None:
    """Every step's loss within `rel` relative of the reference run's."""
    ours, theirs = step_losses(run), step_losses(reference)
    assert set(steps) <= set(ours), sorted(ours)
    for step in steps:
        assert ours[step] == pytest.approx(theirs[step], rel=rel), (step, ours[step], theirs[step])


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_train_as_one_process_with_the_same_global_batch(workspace, single_run, tmp_path, strategy):
    run = tmp_path / strategy
    result = launch(workspace, run, 2, f"training.strategy={strategy}")
    assert_losses_close(run, single_run, rel=1e-5)
    reference = final_weights(single_run)
    weights = final_weights(run)
    assert weights.keys() == reference.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5, msg=name)
    # Rank 0 alone writes the console and the run's files.
    assert (result.stdout + result.stderr).count("before training: val loss") == 1
    assert json.loads((run / "final" / "meta.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_killed_rank_resumes_bit_exactly_at_the_same_world_size(workspace, tmp_path, strategy):
    uninterrupted, crashed = tmp_path / "whole", tmp_path / "crashed"
    # No evaluation before the kill, so the resume starts from the periodic step-4 checkpoint, not best/.
    settings = ["training.save_steps=4", "training.eval_steps=10", f"training.strategy={strategy}"]
    launch(workspace, uninterrupted, 2, *settings)
    killed = launch(workspace, crashed, 2, *settings, "debug.kill_at_step=6", "debug.kill_rank=1", check=False)
    assert killed.returncode != 0
    assert not (crashed / "final").exists()
    assert max(step_losses(crashed)) in (5, 6)  # rank 1 died after step 6; rank 0 stalls at step 7
    periodic = crashed / "checkpoints" / "step-00000004"
    # FSDP: each rank wrote its own shards (DCP), nothing gathered; DDP: one consolidated file.
    assert (periodic / "sharded" / ".metadata").is_file() == (strategy == "fsdp")
    assert (periodic / "model.safetensors").is_file() == (strategy == "ddp")
    resumed = launch(workspace, crashed, 2, *settings)
    assert f"resuming from {periodic} at step 4/" in resumed.stdout + resumed.stderr
    assert step_losses(crashed) == step_losses(uninterrupted)
    reference = final_weights(uninterrupted)
    for name, tensor in final_weights(crashed).items():
        assert torch.equal(tensor, reference[name]), name


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_resume_at_another_world_size_keeps_the_loss_curve(workspace, single_run, tmp_path, before, after):
    run = tmp_path / f"{before}to{after}"
    strategy = {1: "single", 2: "fsdp"}
    # No evaluation before the kill: the resume reads the periodic step-4 checkpoint (2 -> 1: FSDP's shards).
    launch(workspace, run, before, "training.save_steps=4", "training.eval_steps=10", "debug.kill_at_step=6",
           f"training.strategy={strategy[before]}", check=False)
    assert not (run / "final").exists()
    assert (run / "checkpoints" / "step-00000004" / "sharded").is_dir() == (before == 2)
    result = launch(workspace, run, after, "training.save_steps=4", "training.eval_steps=10",
                    f"training.strategy={strategy[after]}")
    output = result.stdout + result.stderr
    assert "resuming from" in output and "at step 4/" in output, output
    assert_losses_close(run, single_run, rel=1e-3)


def test_a_rank_lost_before_a_save_ends_the_others_with_one_clear_line(workspace, tmp_path):
    """Without torchrun's agent to kill them, the surviving rank must not hang or print a traceback."""
    run = tmp_path / "orphaned"
    env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "200", "OMP_NUM_THREADS": "1",
           "TEMPERING_CACHE_DIR": str(TEST_CACHE_DIR), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": "2"}
    args = ["pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", run,
            *TINY_RUN, *GLOBAL_BATCH, "training.save_steps=2", "debug.kill_at_step=4", "debug.kill_rank=1",
            "training.distributed_timeout_minutes=1"]
    ranks = [subprocess.Popen([sys.executable, "-m", "tempering", *map(str, args)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert ranks[1].returncode == -9
    assert ranks[0].returncode == 2, outputs[0]
    assert "Traceback" not in outputs[0][1]
    assert "another process of this run died or stopped answering" in outputs[0][1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002"]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

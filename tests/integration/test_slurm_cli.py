"""`temper submit` on a real single-node SLURM cluster (munge, slurmctld, slurmd on localhost): the
wall-time signal makes training checkpoint, the job requeues itself, and the requeued job finishes
with the weights of an uninterrupted run; an injected crash is resubmitted up to
slurm.max_failures, then the job stops with the reason in its log.

The daemons need root and Debian's slurm-wlm + munge (`.ci/run` installs them); without them the
tests skip and say why, unless TEMPERING_REQUIRE_SLURM is set (CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tempering.tracking.metrics import read_metrics
from tests.conftest import TEST_CACHE_DIR, run_temper
from tests.integration.local_slurm import LocalSlurm, Unavailable, _free_port

pytestmark = pytest.mark.slow

# SLURM checks time limits every 30 s and may send --signal up to that much early; with these the
# signal is due as the job starts and arrives within ~30 s, long before the 2-minute limit.
WALL_TIME, SIGNAL_SECONDS = "00:02:00", 90
TRAINING_SECONDS = 50  # the interrupted job's training must outlast the signal's arrival
ENV = {"OMP_NUM_THREADS": "1"}  # one thread everywhere: bit-identical results


@pytest.fixture(scope="module")
def cluster():
    """A local cluster whose requeued jobs are released at once (with a 10-minute limit, so no second signal)."""
    try:
        slurm = LocalSlurm.start()
    except Unavailable as exc:
        if os.environ.get("TEMPERING_REQUIRE_SLURM"):
            pytest.fail(f"TEMPERING_REQUIRE_SLURM is set but no local SLURM cluster could start: {exc}")
        pytest.skip(f"no local SLURM cluster: {exc}")
    slurm.keep_releasing(time_limit_minutes=10)
    yield slurm
    slurm.stop()


def tiny(workspace: Path) -> list[str]:
    """The tiny preset on the workspace shards as overrides (temper submit takes only --save-dir and --data)."""
    return [f"tokenizer.path={workspace / 'tok'}", "model.preset=tiny", "data.seq_len=32", "training.batch_size=4",
            "training.learning_rate=3e-3", "training.warmup_steps=2", "training.eval_max_batches=4",
            "training.log_steps=50", "training.eval_steps=1000000", "training.compile=false"]


def submit(cluster: LocalSlurm, workspace: Path, run: Path, *overrides: str) -> str:
    """`temper submit` a tiny pretrain run; the job id."""
    result = run_temper("submit", "--save-dir", run, "--data", workspace / "shards", *tiny(workspace),
                        f"slurm.master_port={_free_port()}", *overrides, env={**cluster.env, **ENV}, check=True)
    return re.search(r"^submitted job (\d+) ", result.stdout).group(1)


def job_log(run: Path, job_id: str) -> tuple[str, str]:
    """The job's slurm-<id>.out and .err (all of its requeued runs, appended)."""
    return tuple((run / "slurm" / f"slurm-{job_id}.{kind}").read_text() for kind in ("out", "err"))


@pytest.fixture(scope="module")
def crash_job(cluster, workspace, tmp_path_factory) -> tuple[Path, str]:
    """A run killed after step 5 every time (checkpoint at 3), at most 1 resubmission; submitted early to overlap."""
    run = tmp_path_factory.mktemp("crash") / "run"
    job_id = submit(cluster, workspace, run, "training.max_steps=200", "training.save_steps=3", "debug.kill_at_step=5",
                    "slurm.max_failures=1", "slurm.wall_time=00:10:00", "slurm.signal_time_seconds=60")
    return run, job_id


def calibrated_steps(workspace: Path, save_dir: Path) -> int:
    """Steps the tiny run takes in about TRAINING_SECONDS on this machine now."""
    run_temper("pretrain", "--data", workspace / "shards", *tiny(workspace), "training.max_steps=200",
               "--save-dir", save_dir, env=ENV, check=True)
    train = [r for r in read_metrics(save_dir / "metrics.jsonl") if r.get("split") == "train"]
    rate = (train[-1]["step"] - train[0]["step"]) / (train[-1]["time_s"] - train[0]["time_s"])
    return max(1000, min(40000, int(rate * TRAINING_SECONDS)))


def test_wall_time_signal_checkpoints_requeues_and_the_requeued_job_finishes_bit_identically(
        cluster, crash_job, workspace, tmp_path):
    steps = calibrated_steps(workspace, tmp_path / "calibration")
    run = tmp_path / "main run 'q' %x"  # quoting through sbatch, bash, srun and torchrun
    job_id = submit(cluster, workspace, run, f"training.max_steps={steps}", f"slurm.wall_time={WALL_TIME}",
                    f"slurm.signal_time_seconds={SIGNAL_SECONDS}")
    reference_log = tmp_path / "reference.log"  # a file, not a pipe nobody reads while the job runs
    with reference_log.open("w") as log:
        reference = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "tempering",
             "pretrain", "--config", str(run / "slurm" / "config.yaml"), f"run.save_dir={tmp_path / 'reference'}"],
            env={**os.environ, **ENV, "PYTHONHASHSEED": "0", "TEMPERING_CACHE_DIR": str(TEST_CACHE_DIR)},
            stdout=log, stderr=subprocess.STDOUT)

    ended = cluster.wait_until_ended(job_id, timeout=600)
    reference.wait(timeout=600)
    out, err = job_log(run, job_id)
    assert reference.returncode == 0, reference_log.read_text()
    assert ended["JobState"] == "COMPLETED" and ended["Restarts"] == "1", (ended, out, err)
    assert job_id in cluster.released
    stops = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "preempted"]
    assert [r["signal"] for r in stops] == [f"the stop file {run}/slurm/stop"], out + err
    step = stops[0]["step"]
    assert 0 < step < steps
    assert "stopped before the wall time" in out and "requeueing; the job resumes" in out, out
    assert f"resuming from {run}/checkpoints/step-{step:08d} at step {step}/{steps}" in out + err
    assert "(restart 1)" in out and out.rstrip().endswith("training finished")
    assert not (run / "slurm" / "failure_count").exists()
    reference_weights = load_file(tmp_path / "reference" / "final" / "model.safetensors")
    weights = load_file(run / "final" / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference_weights[name]), name


def test_a_crash_is_resubmitted_up_to_max_failures_then_the_job_stops(cluster, crash_job):
    run, job_id = crash_job
    ended = cluster.wait_until_ended(job_id, timeout=600)
    out, err = job_log(run, job_id)
    assert ended["JobState"] == "FAILED" and ended["Restarts"] == "1", (ended, out, err)
    assert (run / "slurm" / "failure_count").read_text().strip() == "1"
    assert re.search(r"training failed \(exit \d+\); resubmitting \(failure 1 of slurm.max_failures=1\)", out), out
    assert re.search(r"training failed \(exit \d+\), not resubmitted: 1 failure\(s\) already resubmitted, "
                     r"slurm.max_failures is 1", err), err
    assert f"resuming from {run}/checkpoints/step-00000003 at step 3/200" in out + err
    assert not (run / "final").exists()

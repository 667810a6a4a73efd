"""The job script's decisions, run by bash against stand-ins for srun, scontrol and sbatch: finish,
stop and requeue on the wall-time signal, resubmit a crash within slurm.max_failures, then give up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tempering.config import load_config
from tempering.slurm.script import render_job_script

FAKE_SRUN = """#!/bin/bash
echo "$*" > "$FAKE_LOG/srun.args"
[ -e "$TEMPERING_STOP_FILE" ] && echo present > "$FAKE_LOG/stop_file_at_start"
case "$FAKE_SRUN" in
    ok) exit 0;;
    crash) exit 1;;
    wait-stop)  # training: runs until asked to stop, then exits non-zero as torchrun does for status 75
        touch "$FAKE_LOG/srun.started"
        for _ in $(seq 400); do [ -e "$TEMPERING_STOP_FILE" ] && exit 1; sleep 0.05; done
        exit 9;;
esac
"""
FAKE_SCONTROL = """#!/bin/bash
if [ "$1" = show ]; then printf 'node1\\nnode2\\n'; exit 0; fi
echo "scontrol $*" >> "$FAKE_LOG/calls"
exit "${FAKE_REQUEUE_STATUS:-0}"
"""
FAKE_SBATCH = """#!/bin/bash
echo "sbatch $*" >> "$FAKE_LOG/calls"
echo "77;cluster"
"""


@pytest.fixture
def job(tmp_path):
    """Render a job script for a run in tmp_path/run; `start(...)` runs it under bash with stand-in commands."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    run = tmp_path / "run"
    (run / "slurm").mkdir(parents=True)

    def start(srun: str, *overrides: str, requeue_status: int = 0) -> subprocess.Popen:
        config = load_config(None, [f"run.save_dir={run}", *overrides])
        script = run / "slurm" / "job.sh"
        script.write_text(render_job_script(config, run, tmp_path, "/opt/python"))
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_SRUN": srun,
               "FAKE_REQUEUE_STATUS": str(requeue_status), "SLURM_JOB_ID": "42",
               "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "2"}
        return subprocess.Popen(["bash", str(script)], env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def calls() -> list[str]:
        return (log / "calls").read_text().splitlines() if (log / "calls").exists() else []

    return SimpleNamespace(start=start, calls=calls, run=run, log=log)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def wait_for(path: Path) -> None:
    deadline = time.time() + 30
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_finished_training_ends_the_job(job):
    status, out, _ = finish(job.start("ok"))
    assert status == 0 and "training finished" in out
    assert job.calls() == []
    srun_args = (job.log / "srun.args").read_text()
    assert "--rdzv-endpoint node1:29500 --rdzv-id 42 -m tempering pretrain" in srun_args
    assert srun_args.strip().endswith(f"--config {job.run}/slurm/config.yaml")


def test_the_wall_time_signal_stops_training_through_the_stop_file_then_requeues(job):
    process = job.start("wait-stop")
    wait_for(job.log / "srun.started")
    process.send_signal(signal.SIGUSR1)
    status, out, _ = finish(process)
    assert status == 0, out
    assert job.calls() == ["scontrol requeue 42"]
    assert "stopped before the wall time (exit 1) after writing a checkpoint" in out
    assert not (job.run / "slurm" / "failure_count").exists()  # not a crash
    assert not (job.run / "slurm" / "stop").exists()  # the next job starts clean


def test_where_requeue_is_refused_the_job_submits_its_successor(job):
    process = job.start("wait-stop", requeue_status=1)
    wait_for(job.log / "srun.started")
    process.send_signal(signal.SIGUSR1)
    status, out, _ = finish(process)
    assert status == 0
    assert job.calls() == ["scontrol requeue 42", f"sbatch --parsable --dependency=afterany:42 {job.run}/slurm/job.sh"]
    assert "submitted job 77, which resumes after this one ends" in out


def test_sigterm_stops_training_without_requeueing(job):
    """scancel or preemption: SLURM, not the script, decides whether the job comes back."""
    process = job.start("wait-stop")
    wait_for(job.log / "srun.started")
    process.send_signal(signal.SIGTERM)
    status, out, _ = finish(process)
    assert status == 1
    assert job.calls() == []
    assert "stopped by SIGTERM" in out


def test_a_crash_is_resubmitted_while_failures_remain(job):
    status, out, _ = finish(job.start("crash", "slurm.max_failures=2"))
    assert status == 0
    assert job.calls() == ["scontrol requeue 42"]
    assert (job.run / "slurm" / "failure_count").read_text().strip() == "1"
    assert "training failed (exit 1); resubmitting (failure 1 of slurm.max_failures=2)" in out


@pytest.mark.parametrize(("max_failures", "already"), [(2, "2"), (0, None)])
def test_a_crash_beyond_max_failures_stops_with_the_reason(job, max_failures, already):
    if already is not None:
        (job.run / "slurm" / "failure_count").write_text(already + "\n")
    status, out, err = finish(job.start("crash", f"slurm.max_failures={max_failures}"))
    assert status == 1
    assert job.calls() == []
    reason = (f"training failed (exit 1), not resubmitted: {max_failures} failure(s) already resubmitted, "
              f"slurm.max_failures is {max_failures}")
    assert reason in err and reason in out


def test_a_stop_request_left_by_an_earlier_job_is_cleared_before_training(job):
    (job.run / "slurm" / "stop").touch()
    status, _, _ = finish(job.start("ok"))
    assert status == 0
    assert not (job.log / "stop_file_at_start").exists()

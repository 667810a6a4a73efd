"""`temper submit` through the real CLI with a stand-in sbatch: the files it writes, what it passes
to sbatch, --dry-run, and one-line refusals (missing sbatch, sbatch refusing) that leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, assert_user_error, run_temper

FAKE_SBATCH = """#!/bin/sh
echo "$@" >> "{log}"
{action}
"""


class StandInSbatch:
    """A stand-in sbatch that logs its arguments to `log`; calling it gives the env that puts it on PATH."""

    def __init__(self, folder: Path):
        self.bin_dir, self.log = folder / "bin", folder / "sbatch.log"
        self.bin_dir.mkdir()

    def __call__(self, action: str = 'echo "1234;cluster"') -> dict:
        (self.bin_dir / "sbatch").write_text(FAKE_SBATCH.format(log=self.log, action=action))
        (self.bin_dir / "sbatch").chmod(0o755)
        return {"PATH": f"{self.bin_dir}:{os.environ['PATH']}"}


@pytest.fixture
def sbatch(tmp_path) -> StandInSbatch:
    return StandInSbatch(tmp_path)


def submit(tmp_path: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    """`temper submit` of a pretrain run in tmp_path/runs/base, from tmp_path."""
    return run_temper("submit", "--save-dir", tmp_path / "runs" / "base", "--data", "shards", "model.preset=tiny",
                      *args, cwd=tmp_path, env=env)


def test_submit_writes_the_config_and_script_then_sbatches_it(tmp_path, sbatch):
    result = submit(tmp_path, "slurm.wall_time=02:00:00", "slurm.signal_time_seconds=600", env=sbatch())
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "base"
    assert result.stdout.startswith(f"submitted job 1234 for {run}: ")
    assert f"{run}/slurm/slurm-1234.out" in result.stdout
    assert sbatch.log.read_text().split() == ["--parsable", str(run / "slurm" / "job.sh")]
    config = yaml.safe_load((run / "slurm" / "config.yaml").read_text())
    assert config["stage"] == "pretrain" and config["run"]["save_dir"] == str(run)
    assert config["data"]["datasets"][0]["path"] == "shards" and config["slurm"]["wall_time"] == "02:00:00"
    script = (run / "slurm" / "job.sh").read_text()
    dry = submit(tmp_path, "slurm.wall_time=02:00:00", "slurm.signal_time_seconds=600", "--dry-run", env=sbatch())
    assert dry.stdout == script
    assert f"python={sys.executable}\n" in script and f"#SBATCH --chdir={tmp_path}\n" in script
    assert sorted(p.name for p in run.iterdir()) == ["slurm"]  # the run itself starts on the cluster


def test_a_new_submission_resets_the_failure_count(tmp_path, sbatch):
    slurm = tmp_path / "runs" / "base" / "slurm"
    slurm.mkdir(parents=True)
    (slurm / "failure_count").write_text("3\n")
    assert submit(tmp_path, env=sbatch()).returncode == 0
    assert not (slurm / "failure_count").exists()


def test_dry_run_prints_the_script_and_submits_nothing(tmp_path, sbatch):
    result = submit(tmp_path, "--dry-run", "slurm.job_name=probe", env=sbatch())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/bin/bash\n") and "#SBATCH --job-name=probe\n" in result.stdout
    assert not sbatch.log.exists()
    assert not (tmp_path / "runs").exists()


def test_dry_run_needs_no_sbatch(tmp_path):
    result = submit(tmp_path, "--dry-run", env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 0, result.stderr
    assert "srun " in result.stdout


def test_missing_sbatch_is_one_line_and_exit_2(tmp_path):
    result = submit(tmp_path, env={"PATH": str(tmp_path / "empty")})
    assert_user_error(result, "sbatch not found on PATH", "--dry-run")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_sbatch_refusing_the_job_is_one_line_and_leaves_nothing(tmp_path, sbatch):
    env = sbatch('echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1')
    result = submit(tmp_path, "slurm.partition=gpu", env=env)
    assert_user_error(result, "sbatch refused", "invalid partition specified: gpu")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_config_without_a_run_directory_is_refused(tmp_path, sbatch):
    result = run_temper("submit", "--data", "shards", cwd=tmp_path, env=sbatch())
    assert_user_error(result, "no run directory: give --save-dir DIR")
    assert not sbatch.log.exists()


def test_the_example_slurm_config_renders(tmp_path):
    result = run_temper("submit", "--config", REPO_ROOT / "configs" / "slurm.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --gpus-per-node=8\n" in result.stdout

"""Submit a run to SLURM: the resolved config and the job script go to `<run_dir>/slurm/`, then sbatch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tempering.config.loading import save_resolved_config
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.slurm.script import render_job_script, slurm_dir
from tempering.training.run_dir import topmost_missing

FAILURE_COUNT = "failure_count"


def submit(config: Config, *, dry_run: bool = False) -> str | None:
    """sbatch `config` as a self-requeueing job and return its id; with `dry_run`, print the script only."""
    run_dir = _run_dir(config)
    script = render_job_script(config, run_dir, Path.cwd(), config.slurm.python or sys.executable)
    if dry_run:
        sys.stdout.write(script)
        return None
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError("sbatch not found on PATH: run temper submit where SLURM's commands are installed "
                        "(a login node), or add --dry-run to print the job script")
    folder = slurm_dir(run_dir)
    created = topmost_missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_resolved_config(config, folder)
        _write_atomically(folder / "job.sh", script)
        (folder / FAILURE_COUNT).unlink(missing_ok=True)  # each submission may resubmit max_failures crashes
    except OSError as exc:
        raise UserError(f"cannot write the job files to {folder}: {exc.strerror}") from None
    try:
        job_id = _sbatch(sbatch, folder / "job.sh")
    except UserError:
        if created is not None:  # a refused first submission leaves nothing behind
            shutil.rmtree(created, ignore_errors=True)
        raise
    print(f"submitted job {job_id} for {run_dir}: script {folder / 'job.sh'}, "
          f"logs {folder}/slurm-{job_id}.out and .err")
    return job_id


def _run_dir(config: Config) -> Path:
    if config.run.save_dir is None:
        raise UserError("no run directory: give --save-dir DIR (or run.save_dir, or paths.output_base)")
    if config.debug.enabled and config.debug.override_existing:
        raise UserError("debug.override_existing wipes the run at every start, so a requeued job would start over; "
                        "remove the old debug run yourself and submit without it")
    return Path(config.run.save_dir).absolute()


def _sbatch(sbatch: str, script: Path) -> str:
    try:
        result = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    except OSError as exc:
        raise UserError(f"cannot run {sbatch}: {exc.strerror}") from None
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise UserError(f"sbatch refused {script}: {lines[-1] if lines else f'exit status {result.returncode}'}")
    return result.stdout.strip().split(";")[0]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o755)
    tmp.replace(path)

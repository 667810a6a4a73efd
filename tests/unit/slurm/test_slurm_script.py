"""The sbatch script `temper submit` renders: exact #SBATCH lines, quoting that survives hostile
values (checked by bash and by sbatch's quoting rules), the srun + torchrun line, and refusals."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tempering.config import load_config
from tempering.errors import UserError
from tempering.slurm.script import processes_per_node, render_job_script, wall_time_seconds

HOSTILE = "a b'c \"d\" $(touch pwned) `touch pwned` %x #e;f"


def render(tmp_path: Path, *overrides: str, run_dir: Path | None = None, python: str = "/opt/py/bin/python",
           slurm: dict | None = None) -> str:
    """The script for a config made of `overrides` (and a raw `slurm` section: values YAML would not keep)."""
    base = {"run": {"save_dir": str(run_dir or tmp_path / "run")}, "slurm": slurm or {}}
    config = load_config(None, list(overrides), base=base)
    return render_job_script(config, Path(config.run.save_dir), tmp_path, python)


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_sbatch_lines_come_from_the_slurm_keys(tmp_path):
    run = tmp_path / "run"
    script = render(tmp_path, "run.name=base", "slurm.num_nodes=2", "slurm.gpus_per_node=4", "slurm.cpus_per_gpu=8",
                    "slurm.partition=gpu", "slurm.wall_time=1-02:00:00", "slurm.signal_time_seconds=120",
                    "slurm.extra_sbatch=['--account=proj', '--qos=high']")
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=base",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1-02:00:00",
        "#SBATCH --signal=B:USR1@120",
        f"#SBATCH --output={run}/slurm/slurm-%j.out",
        f"#SBATCH --error={run}/slurm/slurm-%j.err",
        f"#SBATCH --chdir={tmp_path}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --account=proj",
        "#SBATCH --qos=high",
    ]
    # sbatch reads #SBATCH lines only up to the first command
    first_command = next(i for i, line in enumerate(script.splitlines()) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(script.splitlines()) if line.startswith("#SBATCH"))


def test_defaults_ask_for_one_cpu_node_and_name_the_job_after_the_run(tmp_path):
    lines = sbatch_lines(render(tmp_path, "run.name=base"))
    assert "#SBATCH --job-name=base" in lines and "#SBATCH --nodes=1" in lines
    assert "#SBATCH --time=24:00:00" in lines and "#SBATCH --signal=B:USR1@300" in lines
    assert not [line for line in lines if "--partition" in line or "--gpus" in line or "--cpus" in line]


def test_srun_starts_torchrun_on_every_node_with_the_stage_command(tmp_path):
    script = render(tmp_path, "stage=post_train", "slurm.gpus_per_node=4", "slurm.cpus_per_gpu=8",
                    "slurm.master_port=12345")
    assert ('srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=32 '
            '--gpus-per-node=4 \\\n'
            '    "$python" -m torch.distributed.run --nnodes "$SLURM_NNODES" --nproc-per-node 4 \\\n'
            '    --rdzv-backend c10d --rdzv-endpoint "$first_node:12345" --rdzv-id "$SLURM_JOB_ID" \\\n'
            '    -m tempering post-train --config "$slurm_dir/config.yaml" &\n') in script
    assert 'first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n' in script
    assert "python=/opt/py/bin/python\n" in script


def test_hostile_values_reach_sbatch_and_bash_exactly_as_given(tmp_path):
    run = tmp_path / HOSTILE / "run"
    script = render(tmp_path, run_dir=run, python=f"/opt/{HOSTILE}/python",
                    slurm={"job_name": HOSTILE, "partition": HOSTILE, "extra_sbatch": [f"--comment={HOSTILE}"]})
    # sbatch splits an #SBATCH line as a shell would (quotes, no expansion); % is its file-name pattern
    parsed = dict(shlex.split(line.removeprefix("#SBATCH "))[0].split("=", 1) for line in sbatch_lines(script)
                  if "=" in line)
    assert parsed["--job-name"] == HOSTILE
    assert parsed["--partition"] == HOSTILE
    assert parsed["--comment"] == HOSTILE
    assert parsed["--output"] == str(run).replace("%", "%%") + "/slurm/slurm-%j.out"
    assert parsed["--chdir"] == str(tmp_path)
    # bash parses the script, and its variables hold the values verbatim
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assignments = "\n".join(line for line in script.splitlines() if line.startswith(("run_dir=", "python=")))
    shown = subprocess.run(["bash", "-c", assignments + '\nprintf "%s\\n%s" "$run_dir" "$python"'],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert shown == f"{run}\n/opt/{HOSTILE}/python"
    assert not (tmp_path / "pwned").exists()


def test_setup_lines_are_shell_lines_run_before_training(tmp_path):
    script = render(tmp_path, "slurm.setup=['module load cuda/12', 'source .venv/bin/activate']")
    lines = script.splitlines()
    assert lines.index("module load cuda/12") + 1 == lines.index("source .venv/bin/activate")
    assert lines.index("source .venv/bin/activate") < next(i for i, line in enumerate(lines) if line.startswith("srun"))


@pytest.mark.parametrize(("text", "seconds"), [("30", 1800), ("5:30", 330), ("01:02:03", 3723), ("2-3", 183600),
                                               ("1-00:30", 88200), ("1-01:01:01", 90061)])
def test_wall_time_accepts_sbatchs_formats(text, seconds):
    assert wall_time_seconds(text) == seconds


@pytest.mark.parametrize(("overrides", "message"), [
    (["slurm.wall_time=1h"], "slurm.wall_time '1h' is not an sbatch time limit"),
    (["slurm.wall_time=00:05:00", "slurm.signal_time_seconds=300"], "must be shorter than slurm.wall_time"),
    (["slurm.job_name=a\\b"], "slurm.job_name: 'a\\\\b' holds a backslash"),
    (["slurm.extra_sbatch=['account=proj']"], "slurm.extra_sbatch: 'account=proj' is not an sbatch option"),
    (["stage=prep"], "temper submit runs a training stage; this config's stage is 'prep'"),
])
def test_values_sbatch_cannot_take_are_refused_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(UserError, match=None) as refused:
        render(tmp_path, *overrides)
    assert message in str(refused.value)


def test_processes_per_node_defaults_to_the_gpus_or_one(tmp_path):
    def count(*overrides):
        return processes_per_node(load_config(None, list(overrides)))

    assert count() == 1
    assert count("slurm.gpus_per_node=8") == 8
    assert count("slurm.gpus_per_node=8", "slurm.processes_per_node=2") == 2


@pytest.mark.parametrize(("written", "read"), [("24:00:00", "1-00:00:00"), ("1:30:00", "01:30:00"),
                                               ("48:00:00", "2-00:00:00"), ("'30'", "30")])
def test_an_unquoted_wall_time_is_read_as_the_clock_time_it_was(tmp_path, written, read):
    """YAML 1.1 reads 24:00:00 as the number 86400; it is turned back into a time sbatch reads alike."""
    config = tmp_path / "job.yaml"
    config.write_text(f"slurm:\n  wall_time: {written}\n")
    assert load_config(config).slurm.wall_time == read
    assert load_config(None, [f"slurm.wall_time={written}"]).slurm.wall_time == read  # a command-line override


def test_a_short_unquoted_wall_time_is_ambiguous_and_refused(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("slurm:\n  wall_time: 30\n")  # sbatch would read minutes, YAML 45:00 would give 2700
    with pytest.raises(UserError) as refused:
        load_config(config)
    assert 'slurm.wall_time must be text in quotes, e.g. "30" (minutes)' in str(refused.value)

"""The sbatch script `temper submit` writes: SLURM options, then a batch shell that runs torchrun on
every node through srun, has training checkpoint before the wall time, and requeues or resubmits.

Every value from the config or the file system is shell-quoted. `#SBATCH` lines are read by
sbatch, not by a shell: it strips quotes the same way but treats a backslash as an escape even
inside single quotes and takes `%` in --output as a file-name pattern, so those values refuse
backslashes and double their `%`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.training.stop_signals import STOP_FILE_ENV

STAGE_COMMANDS = {"pretrain": "pretrain", "post_train": "post-train", "sft": "sft", "dpo": "dpo"}
SLURM_DIR = "slurm"
# sbatch --time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds.
WALL_TIME = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def slurm_dir(run_dir: Path) -> Path:
    """Where a run's SLURM files live: config.yaml, job.sh, logs, failure_count, the stop file."""
    return Path(run_dir) / SLURM_DIR


def wall_time_seconds(text: str) -> int:
    """Seconds in an sbatch --time value; UserError naming slurm.wall_time when it is not one."""
    match = WALL_TIME.match(text.strip())
    if not match:
        raise UserError(f"slurm.wall_time {text!r} is not an sbatch time limit: give MM, MM:SS, HH:MM:SS, "
                        "D-HH, D-HH:MM or D-HH:MM:SS")
    days, d_hours, d_minutes, d_seconds, a, b, c = (int(g) if g else 0 for g in match.groups())
    if match.group(1) is not None:
        return ((days * 24 + d_hours) * 60 + d_minutes) * 60 + d_seconds
    if match.group(7) is not None:  # hours:minutes:seconds
        return (a * 60 + b) * 60 + c
    return a * 60 + b  # minutes[:seconds]


def processes_per_node(config: Config) -> int:
    """Training processes per node: slurm.processes_per_node, else one per GPU, else one."""
    slurm = config.slurm
    return slurm.processes_per_node or slurm.gpus_per_node or 1


def render_job_script(config: Config, run_dir: Path, workdir: Path, python: str) -> str:
    """The whole sbatch script for `config`, whose run directory is `run_dir` (absolute)."""
    if config.stage not in STAGE_COMMANDS:
        raise UserError(f"temper submit runs a training stage; this config's stage is {config.stage!r} (give "
                        f"stage: {', '.join(STAGE_COMMANDS)})")
    slurm = config.slurm
    if slurm.signal_time_seconds >= wall_time_seconds(slurm.wall_time):
        raise UserError(f"slurm.signal_time_seconds ({slurm.signal_time_seconds}) must be shorter than "
                        f"slurm.wall_time ({slurm.wall_time}), or every job would stop as soon as it starts")
    return "\n".join([*_sbatch_lines(config, run_dir, workdir), "", *_body(config, run_dir, python)]) + "\n"


def _sbatch_lines(config: Config, run_dir: Path, workdir: Path) -> list[str]:
    slurm = config.slurm
    logs = str(slurm_dir(run_dir) / "slurm-").replace("%", "%%")
    options = [("--job-name", slurm.job_name or config.run.name, "slurm.job_name"),
               ("--nodes", str(slurm.num_nodes), None),
               ("--ntasks-per-node", "1", None)]  # one torchrun agent per node starts the processes
    if slurm.cpus_per_gpu:
        options.append(("--cpus-per-task", str(slurm.cpus_per_gpu * processes_per_node(config)), None))
    if slurm.gpus_per_node:
        options.append(("--gpus-per-node", str(slurm.gpus_per_node), None))
    if slurm.partition:
        options.append(("--partition", slurm.partition, "slurm.partition"))
    options += [("--time", slurm.wall_time.strip(), None),
                ("--signal", f"B:USR1@{slurm.signal_time_seconds}", None),
                ("--output", logs + "%j.out", "run.save_dir"),
                ("--error", logs + "%j.err", "run.save_dir"),
                ("--chdir", str(workdir), "the current directory")]
    lines = ["#!/bin/bash",
             "# Written by `temper submit`; SLURM requeues this job, or the job resubmits this file, until",
             "# training finishes. Edit the config and run `temper submit` again rather than this file.",
             *(f"#SBATCH {flag}={_sbatch_quote(value, what)}" for flag, value, what in options),
             "#SBATCH --requeue",
             "#SBATCH --open-mode=append"]
    for item in slurm.extra_sbatch:
        if not item.startswith("-"):
            raise UserError(f"slurm.extra_sbatch: {item!r} is not an sbatch option; give each as e.g. "
                            "'--account=proj' (without #SBATCH)")
        lines.append(f"#SBATCH {_sbatch_quote(item, 'slurm.extra_sbatch')}")
    return lines


def _sbatch_quote(value: str, what: str | None) -> str:
    if "\\" in value or CONTROL_CHARACTERS.search(value):
        raise UserError(f"{what}: {value!r} holds a backslash or a control character, which an #SBATCH line "
                        "cannot carry; choose another value")
    return shlex.quote(value)


def _body(config: Config, run_dir: Path, python: str) -> list[str]:
    slurm = config.slurm
    srun_options = "--kill-on-bad-exit=1"
    if slurm.cpus_per_gpu:  # srun no longer inherits sbatch's --cpus-per-task (SLURM 22.05+)
        srun_options += f" --cpus-per-task={slurm.cpus_per_gpu * processes_per_node(config)}"
    if slurm.gpus_per_node:
        srun_options += f" --gpus-per-node={slurm.gpus_per_node}"
    setup = list(slurm.setup)  # shell lines by design: not quoted
    return [
        f"run_dir={_shell_quote(str(run_dir), 'run.save_dir')}",
        f"python={_shell_quote(python, 'slurm.python')}",
        f"max_failures={slurm.max_failures}",
        'slurm_dir="$run_dir/slurm"',
        f'export {STOP_FILE_ENV}="$slurm_dir/stop"',
        "export PYTHONUNBUFFERED=1  # log lines reach slurm-*.out as they are printed",
        "",
        "# USR1 is SLURM's warning before the wall time (--signal above): training checkpoints, then this",
        "# job requeues itself. TERM is scancel or preemption: training checkpoints, SLURM decides the rest.",
        "# Training hears both through the stop file (torchrun's agent would die on USR1, not pass it on).",
        "stop_reason=",
        f'trap \'caught=1; stop_reason=wall-time; touch -- "${STOP_FILE_ENV}"\' USR1',
        f'trap \'caught=1; stop_reason=cancelled; touch -- "${STOP_FILE_ENV}"\' TERM',
        f'rm -f -- "${STOP_FILE_ENV}"  # an earlier job\'s request; one that came meanwhile is put back:',
        f'[ -z "$stop_reason" ] || touch -- "${STOP_FILE_ENV}"',
        "",
        "say() { printf '%s temper job %s: %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$SLURM_JOB_ID\" \"$*\"; }",
        "",
        *(["# slurm.setup", *setup, ""] if setup else []),
        'first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'say "starting on $SLURM_JOB_NODELIST (restart ${SLURM_RESTART_COUNT:-0}), rendezvous at $first_node"',
        f'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 {srun_options} \\',
        f'    "$python" -m torch.distributed.run --nnodes "$SLURM_NNODES" --nproc-per-node {processes_per_node(config)} \\',
        f'    --rdzv-backend c10d --rdzv-endpoint "$first_node:{slurm.master_port}" --rdzv-id "$SLURM_JOB_ID" \\',
        f'    -m tempering {STAGE_COMMANDS[config.stage]} --config "$slurm_dir/config.yaml" &',
        "training=$!",
        "while :; do  # a trapped signal cuts `wait` short; bash keeps srun's status for the next `wait`",
        '    caught=; wait "$training"; status=$?',
        '    [ -n "$caught" ] || break',
        "done",
        f'rm -f -- "${STOP_FILE_ENV}"',
        "",
        "requeue() {  # said first: a successful requeue ends this shell at once",
        "    trap - USR1 TERM",
        '    say "requeueing; the job resumes from the last checkpoint when it starts again"',
        '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
        '    if next=$(sbatch --parsable --dependency="afterany:$SLURM_JOB_ID" "$slurm_dir/job.sh"); then',
        '        say "scontrol requeue failed; submitted job ${next%%;*}, which resumes after this one ends"',
        "        exit 0",
        "    fi",
        '    say "could neither requeue (scontrol) nor resubmit (sbatch); run temper submit again to resume" >&2',
        '    exit "$1"',
        "}",
        "",
        'if [ "$status" -eq 0 ]; then',
        '    say "training finished"',
        "    exit 0",
        "fi",
        'case "$stop_reason" in',
        "    wall-time)",
        '        say "stopped before the wall time (exit $status) after writing a checkpoint"',
        '        requeue "$status";;',
        "    cancelled)",
        '        say "stopped by SIGTERM (scancel or preemption; exit $status); not requeued by this script"',
        '        exit "$status";;',
        "esac",
        'failures=$(cat -- "$slurm_dir/failure_count" 2>/dev/null)',
        'case "$failures" in ""|*[!0-9]*) failures=0;; esac',
        'if [ "$failures" -ge "$max_failures" ]; then',
        '    reason="training failed (exit $status), not resubmitted: $failures failure(s) already resubmitted, '
        'slurm.max_failures is $max_failures; fix the cause and run temper submit again to resume"',
        '    say "$reason"; say "$reason" >&2',
        '    exit "$status"',
        "fi",
        'echo $((failures + 1)) > "$slurm_dir/failure_count"',
        'say "training failed (exit $status); resubmitting (failure $((failures + 1)) of slurm.max_failures=$max_failures)"',
        'requeue "$status"',
    ]


def _shell_quote(value: str, what: str) -> str:
    if "\x00" in value:
        raise UserError(f"{what}: {value!r} holds a NUL character; choose another value")
    return shlex.quote(value)

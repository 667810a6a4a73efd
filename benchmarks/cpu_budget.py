"""Run a training command until it has spent a budget of CPU time: the fair clock on a shared machine.

Imported by `speech_asr.py`, `speech_talker.py` and `vision_captioning.py` (run as scripts from this folder).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its children so far."""
    try:
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    except psutil.NoSuchProcess:
        return 0.0


def run_with_cpu_budget(command: list, budget_s: float, log: Path, *, cwd: Path | None = None,
                        env: dict | None = None) -> dict:
    """Run `command` (output appended to `log`) until it ends or has used `budget_s` CPU seconds, then SIGTERM it.

    The engine checkpoints and exits on SIGTERM, so the run's last state is kept. Returns the CPU
    and wall seconds used, whether the budget stopped it, and its exit status.
    """
    started = time.perf_counter()
    with open(log, "a") as output:
        process = subprocess.Popen(list(map(str, command)), stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
                                   env=env)
        watched, used, stopped = psutil.Process(process.pid), 0.0, False
        while process.poll() is None:
            used = max(used, cpu_seconds(watched))
            if not stopped and used >= budget_s:
                process.send_signal(signal.SIGTERM)
                stopped = True
            time.sleep(2)
    return {"cpu_s": used, "wall_s": time.perf_counter() - started, "budget_reached": stopped,
            "returncode": process.returncode}

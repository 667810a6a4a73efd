"""One process trains in a run directory at a time: an OS lock held for the life of the process.

`flock` on `<run_dir>/.lock`. The kernel releases it when the process ends, however it ends
(`kill -9` included), so a stale lock never blocks a resume, and `temper runs` tells a live
run from an interrupted one by trying the lock without taking it. POSIX only; where `fcntl`
does not exist (Windows) no lock is taken and every run looks not-running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from tempering.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".lock"
_held: dict[str, IO[str]] = {}  # run dir -> the open lock file this process holds


def lock_run_dir(run_dir: Path) -> None:
    """Hold `run_dir`'s lock until this process ends; UserError when another live process holds it."""
    key = str(Path(run_dir).resolve())
    if fcntl is None or key in _held:
        return
    handle = open(Path(run_dir) / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "pid unknown"
        handle.close()
        raise UserError(f"{run_dir} is being trained by another process ({holder}); wait for it to finish, or "
                        "stop it first (re-running the same command afterwards resumes)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _held[key] = handle


def unlock_run_dir(run_dir: Path) -> None:
    """Release this process's lock on `run_dir` (before the directory is moved aside)."""
    handle = _held.pop(str(Path(run_dir).resolve()), None)
    if handle is not None:
        handle.close()  # closing the file releases the flock


def lock_holder(run_dir: Path) -> str | None:
    """'pid N' when a live process holds `run_dir`'s lock, else None; reads only, changes nothing."""
    file = Path(run_dir) / LOCK_FILE
    if fcntl is None or not file.is_file():
        return None
    try:
        with open(file, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "pid unknown"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None

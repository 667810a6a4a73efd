"""Stop on request without losing work: SIGTERM, SIGUSR1 or SIGHUP make the run checkpoint and exit.

Schedulers (SLURM, Kubernetes) and `kill` send these before they stop a job. The handler
only sets a flag; the loop checks it at each optimizer-step boundary (and before every
validation batch, abandoning that evaluation), writes a checkpoint,
and ends with `Preempted` (exit status 75), so at most the step in flight is redone when the
same command runs again. Handlers are installed only in the main thread (Python's rule)
and the previous ones are put back afterwards.

A stop can also be asked for through a file: when $TEMPERING_STOP_FILE names one, rank 0
checks for it at each step boundary (the flag is all-reduced, so every rank stops). The
`temper submit` job script uses it because torchrun's agent, which stands between the batch
shell and the training processes, dies on SIGUSR1 instead of passing it on.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from tempering.ranks import is_main_process

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGHUP") if hasattr(signal, name))
STOP_FILE_ENV = "TEMPERING_STOP_FILE"


class Preempted(Exception):
    """A run stopped on a signal after writing a checkpoint; re-running the same command resumes it."""


class StopSignals:
    """Context manager: while active, a stop signal sets `received` (its name) instead of killing the process."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}
        stop_file = os.environ.get(STOP_FILE_ENV)
        self._stop_file = Path(stop_file) if stop_file and is_main_process() else None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """Whether to stop: a stop signal arrived, or (rank 0) the file named by $TEMPERING_STOP_FILE exists."""
        if self.received is None and self._stop_file is not None and self._stop_file.exists():
            self.received = f"the stop file {self._stop_file}"
        return self.received is not None

    def _handle(self, number: int, frame) -> None:
        self.received = signal.Signals(number).name

"""Stop on request without losing work: SIGTERM, SIGUSR1 or SIGHUP make the run checkpoint and exit.

Schedulers (SLURM, Kubernetes) and `kill` send these before they stop a job. The handler
only sets a flag; the loop checks it at each optimizer-step boundary, writes a checkpoint,
and ends with `Preempted` (exit status 75), so at most the step in flight is redone when the
same command runs again. Handlers are installed only in the main thread (Python's rule)
and the previous ones are put back afterwards.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGHUP") if hasattr(signal, name))


class Preempted(Exception):
    """A run stopped on a signal after writing a checkpoint; re-running the same command resumes it."""


class StopSignals:
    """Context manager: while active, a stop signal sets `received` (its name) instead of killing the process."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        self.received = signal.Signals(number).name

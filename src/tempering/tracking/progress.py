"""The training progress bar: step count, loss, learning rate, tokens/s and ETA (`rich`)."""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tempering.tracking.console import console


class TrainingProgress:
    """A context manager showing training progress on stderr; plain lines when not a terminal."""

    def __init__(self, total_steps: int, start_step: int):
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, disable=not console.is_terminal)
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step,
                                             loss="-", lr="-", speed="-")
        self._plain = not console.is_terminal
        self._started, self._start_step = time.perf_counter(), start_step

    def __enter__(self) -> TrainingProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def advance(self, *, lr: float) -> None:
        """Count one optimizer step."""
        self._progress.update(self._task, advance=1, lr=f"{lr:.2e}")

    def reset(self, step: int) -> None:
        """Move the bar back to `step` (after a recovery restored an earlier state)."""
        self._progress.update(self._task, completed=step)
        self._started, self._start_step = time.perf_counter(), step

    def show(self, *, loss: float, tokens_per_s: float) -> None:
        """Show the latest logged loss and throughput (plain line when not a terminal)."""
        self._progress.update(self._task, loss=f"{loss:.4f}", speed=f"{tokens_per_s:,.0f}")
        if self._plain:
            task = self._progress.tasks[0]
            done, total = int(task.completed), int(task.total)
            elapsed = time.perf_counter() - self._started
            steps = done - self._start_step
            eta = format_duration(elapsed / steps * (total - done)) if steps > 0 else "-"
            console.print(f"step {done}/{total}  loss {loss:.4f}  lr {task.fields['lr']}  {tokens_per_s:,.0f} tok/s"
                          f"  elapsed {format_duration(elapsed)}  eta {eta}")

    def print(self, line: str) -> None:
        """Print a line above the bar."""
        self._progress.console.print(line)


def format_duration(seconds: float) -> str:
    """`1:02`, `12:05`, `3:04:05` (hours only when needed), like the terminal bar."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

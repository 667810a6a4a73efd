"""The training progress bar: step count, loss, learning rate, tokens/s and ETA (`rich`)."""

from __future__ import annotations

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

    def show(self, *, loss: float, tokens_per_s: float) -> None:
        """Show the latest logged loss and throughput (plain line when not a terminal)."""
        self._progress.update(self._task, loss=f"{loss:.4f}", speed=f"{tokens_per_s:,.0f}")
        if self._plain:
            task = self._progress.tasks[0]
            console.print(f"step {int(task.completed)}/{int(task.total)}  loss {loss:.4f}  "
                          f"lr {task.fields['lr']}  {tokens_per_s:,.0f} tok/s")

    def print(self, line: str) -> None:
        """Print a line above the bar."""
        self._progress.console.print(line)

"""Console output: one stderr console, progress bars, and summary tables (all `rich`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Off a terminal (log files, CI, SLURM .out) a message stays on one line, whatever its length.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160,
                  soft_wrap=not sys.stderr.isatty())
# Tables piped to a file keep all their columns instead of rich's 80-column default.
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, *, counts: bool = False) -> Iterator:
    """Show a progress bar on stderr; yields `advance(n)`. Hidden when stderr is not a terminal."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(),
               MofNCompleteColumn() if counts else TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=console, transient=False,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(amount: float = 1, status: str | None = None) -> None:
            if status is None:
                progress.advance(task, amount)
            else:
                progress.update(task, advance=amount, status=status)

        yield advance


def warn(message: str) -> None:
    """One yellow `warning:` line for something suspicious the run goes on despite (markup in `message` is kept)."""
    console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def print_table(title: str, columns: list[str], rows: list[list], *, to_stdout: bool = True,
                left_columns: int = 1) -> None:
    """Print a simple table (the first `left_columns` columns left-aligned, the rest right-aligned)."""
    table = Table(title=title, title_justify="left")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < left_columns else "right")
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    (stdout if to_stdout else console).print(table)

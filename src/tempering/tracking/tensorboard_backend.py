"""TensorBoard: event files under `<run_dir>/logs/`, written with torch's SummaryWriter.

A resumed run opens its writer with `purge_step` = the first step it will replay, so TensorBoard
drops what the killed process wrote past its checkpoint and the curves never double back.
Every write is flushed: a killed run's events up to its last record are on disk.
"""

from __future__ import annotations

from pathlib import Path

from tempering.tracking.backend import Backend


class TensorBoardBackend(Backend):
    """Scalars into `<run_dir>/logs/` (TensorBoard's event format)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, *, first_step: int):
        super().__init__()
        self._log_dir = run_dir / "logs"
        self._writer = _open_writer(self._log_dir, first_step)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Add each scalar at `step` and flush."""
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def rewind(self, step: int) -> None:
        """Purge everything past `step`: a new writer whose purge_step is the first replayed step."""
        self._writer.close()
        self._writer = _open_writer(self._log_dir, step + 1)

    def close(self, *, completed: bool, artifacts: list) -> None:
        """Flush and close the event file."""
        self._writer.close()


def _open_writer(log_dir: Path, purge_step: int):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

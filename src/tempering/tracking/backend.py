"""What every tracker backend shares: a metrics.jsonl record as named scalars, and resume de-duplication.

A record becomes `{"<split>/<field>": value}` at its step (`train/loss`, `val:new/ppl`,
`system/rss_mb`); an event becomes `events/<event>[_<kind>]` = 1 plus its numeric fields, so a
recovery or an early stop shows as a marker at its step. Strings, None and the bookkeeping
fields (`step`, `split`, `event`) are not scalars.

A resumed run replays the steps between its checkpoint and the kill with the same values
(resume is deterministic), so a backend that already holds a key at a step keeps that value:
`skip_through` holds, per key, the last step the backend had before this process started.
A backend that can say what it holds (`backfills`) is also sent the metrics.jsonl records it
lacks, e.g. what W&B had not flushed to disk when the previous process was killed.
"""

from __future__ import annotations

import math
from typing import ClassVar

NOT_SCALARS = frozenset({"step", "split", "event", "kind"})


def record_scalars(record: dict) -> tuple[int, dict[str, float]]:
    """The record's step and its numeric fields under backend metric names."""
    step = int(record.get("step", 0))
    if "event" in record:
        prefix = f"events/{record['event']}" + (f"_{record['kind']}" if isinstance(record.get("kind"), str) else "")
        scalars = {prefix: 1.0}
        scalars.update({f"{prefix}/{name}": value for name, value in _numbers(record)})
        return step, scalars
    split = record.get("split", "train")
    return step, {f"{split}/{name}": value for name, value in _numbers(record)}


def _numbers(record: dict):
    for name, value in record.items():
        if name in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            yield name, float(value)


class Backend:
    """A tracker: takes named scalars at a step; `close` ends its run (artifacts on success)."""

    name: ClassVar[str]
    run_id: str | None = None  # the tracker's own run id, persisted so a resume continues the run
    skip_floor: int = -1  # steps at or below this are held for every key (a resumed online W&B run)
    backfills: ClassVar[bool] = False  # knows what it holds, so a resume sends it what metrics.jsonl has and it lacks

    def __init__(self) -> None:
        self.skip_through: dict[str, int] = {}  # key -> last step the tracker already holds
        self._last_step: dict[str, int] = {}  # key -> last step this process sent

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Send the scalars the tracker does not hold yet at this step."""
        fresh = {key: value for key, value in scalars.items() if step > self.skip_through.get(key, self.skip_floor)}
        if fresh:
            self.log(step, fresh)
            self._last_step.update(dict.fromkeys(fresh, step))

    def rewind(self, step: int) -> None:
        """The loop restored `step` (NaN recovery) and will replay the steps after it: keep what was sent."""
        self.skip_through.update(self._last_step)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Send scalars at a step (each backend implements this)."""
        raise NotImplementedError

    def close(self, *, completed: bool, artifacts: list) -> None:
        """End the run: completed (artifacts attached) or interrupted."""

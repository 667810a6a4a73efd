"""`metrics.jsonl`: one JSON object per event, appended and flushed (DESIGN.md, "Run directory")."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class MetricsLog:
    """Append-only JSON-lines log; a killed run leaves a valid file up to its last line."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def write(self, record: dict) -> None:
        """Append one record and flush it to the OS."""
        clean = {k: _finite_or_none(v) for k, v in record.items()}
        self._file.write(json.dumps(clean, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file (fsync so the last line survives a power cut)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def truncate_after_step(path: Path, step: int) -> None:
    """Drop records past `step` (left by a killed run) so a resumed run does not repeat them."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if record.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: Path, *, skip_cut_lines: bool = False) -> list[dict]:
    """All records of a metrics file (`skip_cut_lines`: leave out a line a kill cut short instead of failing)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if not skip_cut_lines:
                raise
    return records


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value

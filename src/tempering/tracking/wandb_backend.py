"""Weights & Biases: offline by default (`<run_dir>/wandb/`, upload later with `wandb sync`).

The W&B run id is persisted in the run dir (see fanout.py), so a resumed run continues the same
W&B run. Offline, each process writes its own `offline-run-*-<id>` directory; the history the
earlier ones hold is read back so the steps replayed after a resume are not sent twice.

Reading an offline run is written here because W&B ships no reader for its `.wandb` files any
more: they are a LevelDB-style log (a 7-byte `:W&B` header, then 32 KiB blocks of
crc/length/type-framed chunks) of `wandb_internal_pb2.Record` protobufs, which W&B's own proto
module parses.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from tempering.tracking.backend import Backend

BLOCK_BYTES = 32 * 1024
HEADER = b":W&B"
HEADER_BYTES = 7
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
FLUSH_INTERVAL_S = 1.0


class WandbBackend(Backend):
    """Scalars into one W&B run; `run.log(..., step=)` with the training step."""

    name = "wandb"
    backfills = True

    def __init__(self, run_dir: Path, *, project: str, name: str, tags: list[str], mode: str,
                 config: dict, run_id: str | None):
        super().__init__()
        import wandb

        if run_id and mode == "offline":
            self.skip_through = last_logged_steps(run_dir, run_id)
        options = {"console": "off", "silent": True, "x_disable_stats": True, "x_disable_meta": True,
                   # W&B writes its offline log every 15 s by default: a killed run would lose that much.
                   "x_transaction_log_flush_interval": FLUSH_INTERVAL_S}
        settings = wandb.Settings(**{k: v for k, v in options.items() if k in wandb.Settings.model_fields})
        self._run = wandb.init(project=project, name=name, tags=tags or None, mode=mode, dir=str(run_dir),
                               id=run_id, resume="allow" if run_id else None, config=config,
                               settings=settings)
        self.run_id = self._run.id
        if run_id and mode == "online" and self._run.starting_step:  # the server knows where it left off
            self.skip_through = dict.fromkeys(self.skip_through, self._run.starting_step - 1)
            self.skip_floor = self._run.starting_step - 1

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Log at the training step (records of one step merge into one W&B history row)."""
        self._run.log(scalars, step=step)

    def close(self, *, completed: bool, artifacts: list) -> None:
        """Finish the run (exit code 1 when training did not complete)."""
        self._run.finish(exit_code=0 if completed else 1)


def offline_run_dirs(run_dir: Path, run_id: str) -> list[Path]:
    """The offline directories of one W&B run, oldest first."""
    return sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))


def read_offline_history(run_dir: Path, run_id: str) -> list[dict]:
    """Every history row of a W&B offline run, across its resumed processes, in the order written."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for directory in offline_run_dirs(run_dir, run_id):
        for path in sorted(directory.glob("*.wandb")):
            for data in _read_log_records(path.read_bytes()):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(data)
                if record.WhichOneof("record_type") == "history":
                    rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                 for item in record.history.item})
    return rows


def last_logged_steps(run_dir: Path, run_id: str) -> dict[str, int]:
    """Per metric, the last step the run's offline history holds."""
    steps: dict[str, int] = {}
    for row in read_offline_history(run_dir, run_id):
        for key in row:
            if not key.startswith("_"):
                steps[key] = max(steps.get(key, -1), int(row["_step"]))
    return steps


def _read_log_records(data: bytes) -> Iterator[bytes]:
    """The records of a `.wandb` log; stops at a chunk cut short by a killed writer."""
    if data[:len(HEADER)] != HEADER:
        return
    position, pending = HEADER_BYTES, b""
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_BYTES - position % BLOCK_BYTES
        if left_in_block < CHUNK_HEADER.size:  # block trailer: padding
            position += left_in_block
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        position += CHUNK_HEADER.size
        if kind == 0 or position + length > len(data):
            return
        chunk = data[position:position + length]
        position += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk

"""Read chat records from JSONL / JSON / Parquet files and normalise them, naming file:line on errors.

Unlike `prep` (which skips a few bad lines of a large corpus), a malformed chat record stops
the load: chat sets are small and curated, and a silently dropped record is a silent bug.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from tempering.data.chat.conversation import Conversation, PreferencePair
from tempering.data.chat.formats import (
    CHAT_FORMATS,
    RecordError,
    normalize_preference,
    normalize_record,
)
from tempering.data.chat.transforms import get_transform
from tempering.data.sources import discover_files, file_kind
from tempering.errors import UserError

PathLike = str | Path
# Dataset `format` values that name a file container, not a record layout: detect per record.
CONTAINER_FORMATS = frozenset({"auto", "jsonl", "json", "parquet"})
PARQUET_BATCH_ROWS = 1024

T = TypeVar("T")


def iter_conversations(path: PathLike | list[PathLike], format: str = "auto",
                       transform: str | None = None, limit: int | None = None) -> Iterator[Conversation]:
    """Yield the conversations of files, directories or globs, in file order (see `load_conversations`)."""
    record_format = _record_format(format, allowed=CHAT_FORMATS)
    yield from _normalised(path, transform, limit, lambda record: normalize_record(record, record_format))


def load_conversations(path: PathLike | list[PathLike], format: str = "auto",
                       transform: str | None = None, limit: int | None = None) -> list[Conversation]:
    """Read chat records (.jsonl/.json/.parquet) and normalise them; UserError names file:line of a bad one."""
    conversations = list(iter_conversations(path, format, transform, limit))
    if not conversations:
        raise UserError(f"{path}: holds no chat records")
    return conversations


def load_preference_pairs(path: PathLike | list[PathLike], format: str = "auto",
                          transform: str | None = None, limit: int | None = None) -> list[PreferencePair]:
    """Read {prompt, chosen, rejected} records; UserError names file:line of a bad one."""
    _record_format(format, allowed=("preference",))
    pairs = list(_normalised(path, transform, limit, normalize_preference))
    if not pairs:
        raise UserError(f"{path}: holds no preference records")
    return pairs


def iter_records(file: Path) -> Iterator[tuple[str, object]]:
    """Yield (location, record) for each record of one .jsonl(.gz) / .json / .parquet file."""
    kind = file_kind(file)
    if kind == "parquet":
        yield from _parquet_records(file)
    elif kind == "jsonl":
        yield from _json_records(file)
    else:
        raise UserError(f"{file}: chat data must be .jsonl, .json or .parquet")


def _record_format(format: str, allowed: tuple[str, ...]) -> str:
    if format in CONTAINER_FORMATS:
        return "auto"
    if format in allowed:
        return format
    raise UserError(f"format {format!r} is not usable here; use auto (detect per record) or "
                    f"{' / '.join(allowed)}")


def _normalised(path: PathLike | list[PathLike], transform: str | None, limit: int | None,
                normalise: Callable[[object], T]) -> Iterator[T]:
    apply = get_transform(transform) if transform else None  # an unknown name fails before any reading
    inputs = [str(item) for item in (path if isinstance(path, list) else [path])]
    count = 0
    for file in discover_files(inputs):
        for where, record in iter_records(file):
            if limit is not None and count >= limit:
                return
            if apply is not None:
                record = _transformed(apply, transform, record, where)
            try:
                yield normalise(record)
            except RecordError as error:
                raise UserError(str(error), where=where) from error
            count += 1


def _transformed(apply: Callable[[dict], dict], name: str | None, record: object, where: str) -> dict:
    try:
        result = apply(record)
    except Exception as error:  # a user's transform failing on a record is the user's to fix
        raise UserError(f"transform {name!r} failed: {type(error).__name__}: {error}", where=where) from error
    if not isinstance(result, dict):
        raise UserError(f"transform {name!r} returned {type(result).__name__}, not a record dict", where=where)
    return result


def _open_lines(file: Path) -> Iterator[bytes]:
    opener = gzip.open if file.name.lower().endswith(".gz") else open
    with opener(file, "rb") as handle:
        yield from handle


def _json_records(file: Path) -> Iterator[tuple[str, object]]:
    lines = _open_lines(file)
    first = next(lines, b"").lstrip(b"\xef\xbb\xbf")  # a byte-order mark is not content
    if first.lstrip().startswith(b"[") and not file.name.lower().removesuffix(".gz").endswith(".jsonl"):
        yield from _json_array_records(file, first + b"".join(lines))
        return
    for number, raw in enumerate(_chain(first, lines), 1):
        where = f"{file}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"invalid UTF-8 at byte {error.start}", where=where) from error
        if not line.strip():
            continue
        try:
            yield where, json.loads(line)
        except (ValueError, RecursionError) as error:
            raise UserError(f"invalid JSON ({getattr(error, 'msg', error)})", where=where) from error


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _json_array_records(file: Path, data: bytes) -> Iterator[tuple[str, object]]:
    try:
        records = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"invalid UTF-8 at byte {error.start}", where=str(file)) from error
    except (ValueError, RecursionError) as error:
        raise UserError(f"invalid JSON ({getattr(error, 'msg', error)})",
                        where=f"{file}:{getattr(error, 'lineno', '?')}") from error
    if not isinstance(records, list):
        raise UserError("a .json chat file must hold one array of records (or one record per line)",
                        where=str(file))
    for index, record in enumerate(records, 1):
        yield f"{file}: item {index}", record


def _parquet_records(file: Path) -> Iterator[tuple[str, object]]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise UserError(f"{file}: reading Parquet needs pyarrow; install it with `pip install pyarrow`") from error
    number = 0
    try:
        for batch in pyarrow.parquet.ParquetFile(file).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield f"{file}: row {number}", _drop_nulls(row)
    except pyarrow.ArrowException as error:
        raise UserError(f"{file}: not a readable Parquet file ({error})") from error


def _drop_nulls(value: object) -> object:
    # Parquet gives every struct all of its schema's fields, absent ones as null; JSON would omit them.
    if isinstance(value, dict):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nulls(item) for item in value]
    return value

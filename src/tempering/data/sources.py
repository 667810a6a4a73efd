"""Find input files and stream documents out of them: text, JSONL, CSV, Parquet (text formats also gzipped).

Files are read in ~4 MB chunks cut at line ends, so memory stays flat whatever a file's
size (a whole-file document in `file` mode is the one exception). A file that looks binary
(judged on its first 64 KiB, decompressed; Parquet is binary by design and exempt) is skipped
with a warning. The test is a few lines written here rather than a dependency: it is Perl's
`-B` heuristic (a NUL byte, or more than about 30% odd characters) over UTF-8. Invalid UTF-8
in a text file is either replaced (each bad byte becomes U+FFFD and is counted per file) or
makes the whole file skipped; malformed JSONL/CSV rows are reported as file:line and skipped,
and the file fails once more than `max_bad_line_fraction` of its rows are malformed.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from tempering.config.schema import PrepConfig
from tempering.errors import UserError
from tempering.tracking.console import console

SUFFIX_KINDS = {".txt": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv",
                ".parquet": "parquet"}
GZIP_KINDS = frozenset({"text", "jsonl", "csv"})
SUPPORTED = ".txt, .md, .jsonl, .json, .csv, .parquet, or .gz of a text format"
CHUNK_BYTES = 4 << 20
PARQUET_BATCH_ROWS = 4096
MAX_WARNINGS_PER_FILE = 3
CSV_MAX_FIELD_CHARS = 2**31 - 1  # the largest value csv accepts on every platform
GLOB_CHARS = frozenset("*?[")
BINARY_SAMPLE_BYTES = 64 << 10
# Odd characters (invalid UTF-8 bytes, control characters) in real text: none in UTF-8; one
# per accented letter in a legacy Latin encoding (cp1252 French, cp1250 Czech or Hungarian:
# 8-13%), which replace mode still reads, U+FFFD for each. Random or compressed bytes: ~56%;
# Cyrillic in cp1251: ~80%, which replaced would be nothing but U+FFFD. Perl's -B test also
# draws the line at about 30%. A NUL byte means binary (or UTF-16) outright, as git judges.
MAX_ODD_FRACTION = 0.3

ByteCallback = Callable[[int], None]

# Bad bytes decoded with "surrogateescape" become U+DC80..U+DCFF, one per byte: countable.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# Odd characters: invalid bytes (escaped as above) and control characters other than tab,
# newline, formfeed and carriage return (C0, DEL, C1).
_ODD_CHAR = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\udc80-\udcff]")
# A newline followed by one or more whitespace-only lines separates two blocks.
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")


@dataclass
class SourceStats:
    """What reading the inputs found: files, documents, malformed rows, invalid UTF-8, binary files."""

    num_files: int = 0
    num_documents: int = 0
    malformed_lines: dict[str, int] = field(default_factory=dict)  # file -> rows skipped
    replaced_bytes: dict[str, int] = field(default_factory=dict)  # file -> invalid bytes replaced
    skipped_files: list[str] = field(default_factory=list)  # files skipped for invalid UTF-8
    binary_skipped_files: list[str] = field(default_factory=list)  # files skipped as binary

    @property
    def num_malformed_lines(self) -> int:
        """Malformed JSONL/CSV rows skipped over all files."""
        return sum(self.malformed_lines.values())

    @property
    def num_replaced_bytes(self) -> int:
        """Invalid UTF-8 bytes replaced by U+FFFD over all files."""
        return sum(self.replaced_bytes.values())


def file_kind(path: Path) -> str | None:
    """Return the reader for a file name ("text", "jsonl", "csv", "parquet"), or None if unsupported."""
    name = path.name.lower()
    compressed = name.endswith(".gz")
    kind = SUFFIX_KINDS.get(os.path.splitext(name[:-3] if compressed else name)[1])
    if compressed and kind not in GZIP_KINDS:
        return None
    return kind


def discover_files(inputs: list[str], default_dir: str = "data/raw") -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted list of supported files."""
    if not inputs:
        if not Path(default_dir).is_dir():
            raise UserError(f"no input given and the default input folder {default_dir} does not exist; "
                            f"pass --input PATH")
        inputs = [default_dir]
    found: set[Path] = set()
    for item in inputs:
        found.update(_expand_input(str(item)))
    return sorted(found)


def _expand_input(item: str) -> list[Path]:
    path = Path(item).expanduser()
    if not path.exists() and GLOB_CHARS.intersection(item):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            raise UserError(f"{item}: no file matches this pattern")
        files = [file for match in matches for file in _supported_files_under(Path(match))]
        if not files:
            raise UserError(f"{item}: matches no supported input file ({SUPPORTED})")
        return files
    if not path.exists():
        raise UserError(f"{item}: no such file or directory")
    if path.is_dir():
        files = list(_supported_files_under(path))
        if not files:
            raise UserError(f"{item}: the directory holds no supported input file ({SUPPORTED})")
        return files
    if file_kind(path) is None:
        raise UserError(f"{item}: unsupported file type; inputs must be {SUPPORTED}")
    return [Path(os.path.abspath(path))]


def _supported_files_under(path: Path) -> Iterator[Path]:
    if not path.is_dir():
        if file_kind(path) is not None:
            yield Path(os.path.abspath(path))
        return
    for root, dirs, names in os.walk(path):
        # Hidden entries are tool state (.git, .ipynb_checkpoints, our own temp dirs), not data.
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in names:
            if not name.startswith(".") and file_kind(Path(name)) is not None:
                yield Path(os.path.abspath(os.path.join(root, name)))


def iter_documents(files: list[Path], options: PrepConfig, stats: SourceStats,
                   on_bytes: ByteCallback | None = None) -> Iterator[str]:
    """Yield every document's text from `files` in order, counting what was read into `stats`."""
    on_bytes = on_bytes or _ignore_bytes
    for path in files:
        stats.num_files += 1
        kind = file_kind(path)
        try:
            if _skip_whole_file(path, kind, options, stats):
                on_bytes(path.stat().st_size)
                continue
            for text in READERS[kind](path, options, stats, on_bytes):
                stats.num_documents += 1
                yield text
        except (OSError, EOFError, zlib.error) as error:
            raise UserError(f"{path}: cannot read the file ({error})") from error
        if stats.replaced_bytes.get(str(path)):
            _warn(f"{path}: replaced {stats.replaced_bytes[str(path)]:,} invalid UTF-8 bytes with U+FFFD")


def _ignore_bytes(num_bytes: int) -> None:
    pass


def _warn(message: str) -> None:
    if not _silenced[0]:
        console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)  # one line, however long


# Set while `temper prep` reads its inputs again (a later pass): they warned on the first read.
_silenced = [False]


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    """Read inputs again without repeating their warnings (binary, invalid UTF-8, malformed rows)."""
    before, _silenced[0] = _silenced[0], True
    try:
        yield
    finally:
        _silenced[0] = before


def _skip_whole_file(path: Path, kind: str, options: PrepConfig, stats: SourceStats) -> bool:
    """Whether the file is left out: it looks binary, or holds invalid UTF-8 under invalid_utf8=skip."""
    if kind == "parquet":  # binary by design; pyarrow checks it
        return False
    return _skip_binary(path, stats) or (options.invalid_utf8 == "skip" and _skip_invalid_utf8(path, stats))


def binary_reason(sample: bytes, complete: bool = True) -> str | None:
    """Why the start of a file (`sample`) looks binary, or None when it looks like text."""
    if b"\0" in sample:
        return "it holds NUL bytes"
    # A sample cut short may end inside a character: the incremental decoder leaves that part out.
    text = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(sample, final=complete)
    num_odd = len(_ODD_CHAR.findall(text))
    if text and num_odd > MAX_ODD_FRACTION * len(text):
        return (f"{num_odd / len(text):.0%} of its first {BINARY_SAMPLE_BYTES >> 10} KiB is invalid UTF-8 "
                f"or control characters")
    return None


def _skip_binary(path: Path, stats: SourceStats) -> bool:
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.name.lower().endswith(".gz") else raw
        sample = stream.read(BINARY_SAMPLE_BYTES)
    reason = binary_reason(sample, complete=len(sample) < BINARY_SAMPLE_BYTES)
    if reason is None:
        return False
    stats.binary_skipped_files.append(str(path))
    _warn(f"{path}: looks binary, not UTF-8 text ({reason}); file skipped (if it is text, convert it to UTF-8)")
    return True


def _skip_invalid_utf8(path: Path, stats: SourceStats) -> bool:
    offset = 0
    for chunk in _byte_chunks(path, _ignore_bytes):
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            stats.skipped_files.append(str(path))
            _warn(f"{path}: invalid UTF-8 at byte {offset + error.start:,}; file skipped (prep.invalid_utf8=skip)")
            return True
        offset += len(chunk)
    return False


def _byte_chunks(path: Path, on_bytes: ByteCallback) -> Iterator[bytes]:
    """Yield the (decompressed) bytes of a file in chunks that each end at a line end (but the last)."""
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.name.lower().endswith(".gz") else raw
        position = 0
        while chunk := stream.read(CHUNK_BYTES):
            # A UTF-8 sequence never contains the byte "\n", so cutting after one never splits a character.
            yield chunk + stream.readline()
            on_bytes(raw.tell() - position)
            position = raw.tell()


def _text_chunks(path: Path, stats: SourceStats, on_bytes: ByteCallback) -> Iterator[str]:
    first = True
    for chunk in _byte_chunks(path, on_bytes):
        text = _decode(chunk, path, stats)
        if first:
            text, first = text.removeprefix("\ufeff"), False  # a byte-order mark is not content
        yield text


def _decode(chunk: bytes, path: Path, stats: SourceStats) -> str:
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        text, num_bad = _ESCAPED_BYTE.subn("\ufffd", chunk.decode("utf-8", "surrogateescape"))
        stats.replaced_bytes[str(path)] = stats.replaced_bytes.get(str(path), 0) + num_bad
        return text


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    """Split chunks that end at line ends into lines, without their "\\n"."""
    for text in chunks:
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        yield from lines


def _blocks(chunks: Iterator[str]) -> Iterator[str]:
    """Split chunks that end at line ends into blank-line-separated blocks (blank blocks included)."""
    open_block: list[str] = []  # pieces of the block still running at the previous chunk's end
    for text in chunks:
        # A chunk starts at a line start, where a separator may begin or go on: lend the "\n"
        # before it (the open block's last character, or the end of a separator) to the split.
        pieces = _BLANK_LINES.split("\n" + text)
        if open_block:
            open_block[-1] = open_block[-1][:-1]
        else:
            pieces[0] = pieces[0][1:]
        if len(pieces) == 1:
            open_block.append(pieces[0])
            continue
        yield "".join([*open_block, pieces[0]])
        yield from pieces[1:-1]
        open_block = [pieces[-1]] if pieces[-1] else []
    if open_block:
        yield "".join(open_block)


def _read_text(path: Path, options: PrepConfig, stats: SourceStats, on_bytes: ByteCallback) -> Iterator[str]:
    chunks = _text_chunks(path, stats, on_bytes)
    if options.text_unit == "file":
        yield "".join(chunks)
    elif options.text_unit == "line":
        for line in _lines(chunks):
            yield line.removesuffix("\r")
    else:
        for block in _blocks(chunks):
            if block and not block.isspace():  # whitespace between blocks separates, it is no document
                yield block.rstrip("\r\n")


class MalformedRows:
    """Count, report and bound the malformed rows of one file."""

    def __init__(self, path: Path, options: PrepConfig, stats: SourceStats):
        self.path, self.max_fraction, self.stats = path, options.max_bad_line_fraction, stats
        self.num_rows = 0
        self.num_bad = 0
        self.first_bad_line = 0

    def add(self, line_number: int, reason: str) -> None:
        """Record row `line_number` as malformed; warn about the first few."""
        self.num_bad += 1
        self.first_bad_line = self.first_bad_line or line_number
        if self.num_bad <= MAX_WARNINGS_PER_FILE:
            _warn(f"{self.path}:{line_number}: {reason}; line skipped")

    def finish(self) -> None:
        """Record the file's count; raise UserError if too large a share of its rows is malformed."""
        if not self.num_bad:
            return
        if self.num_bad > MAX_WARNINGS_PER_FILE:
            _warn(f"{self.path}: {self.num_bad - MAX_WARNINGS_PER_FILE:,} more malformed lines skipped")
        self.stats.malformed_lines[str(self.path)] = self.num_bad
        if self.num_bad > self.max_fraction * self.num_rows:
            raise UserError(
                f"{self.path}:{self.first_bad_line}: {self.num_bad:,} of {self.num_rows:,} lines are malformed "
                f"({self.num_bad / self.num_rows:.1%}), more than prep.max_bad_line_fraction="
                f"{self.max_fraction}; fix the file or raise the limit")


def _text_of_row(row: object, text_field: str) -> str | None:
    """The text of a JSON row; "" for null (an empty document); None if the row has no text."""
    if not isinstance(row, dict):
        return None
    value = row.get(text_field, 0)  # 0: absent, and not text either
    if value is None:
        return ""
    return value if isinstance(value, str) else None


def _read_jsonl(path: Path, options: PrepConfig, stats: SourceStats, on_bytes: ByteCallback) -> Iterator[str]:
    chunks = _text_chunks(path, stats, on_bytes)
    first = next(chunks, "")
    if first.lstrip().startswith("[") and not path.name.lower().removesuffix(".gz").endswith(".jsonl"):
        yield from _read_json_array(path, first + "".join(chunks), options, stats)
        return
    malformed = MalformedRows(path, options, stats)
    for line_number, line in enumerate(_lines(_prepend(first, chunks)), 1):
        if not line or line.isspace():
            continue
        malformed.num_rows += 1
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            malformed.add(line_number, f"invalid JSON ({getattr(error, 'msg', error)})")
            continue
        text = _text_of_row(row, options.text_field)
        if text is None:
            malformed.add(line_number, f"no text field {options.text_field!r} (set prep.text_field)")
            continue
        yield text
    malformed.finish()


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def _read_json_array(path: Path, text: str, options: PrepConfig, stats: SourceStats) -> Iterator[str]:
    """A .json file holding one array of objects: each object is a document."""
    try:
        rows = json.loads(text)
    except (ValueError, RecursionError) as error:
        line = getattr(error, "lineno", "?")
        raise UserError(f"{path}:{line}: invalid JSON ({getattr(error, 'msg', error)})") from error
    malformed = MalformedRows(path, options, stats)
    for index, row in enumerate(rows, 1):
        malformed.num_rows += 1
        text = _text_of_row(row, options.text_field)
        if text is None:
            malformed.add(index, f"item {index} has no text field {options.text_field!r} (set prep.text_field)")
            continue
        yield text
    malformed.finish()


def _read_csv(path: Path, options: PrepConfig, stats: SourceStats, on_bytes: ByteCallback) -> Iterator[str]:
    # csv's default 128 KB field limit is smaller than many documents.
    csv.field_size_limit(max(csv.field_size_limit(), CSV_MAX_FIELD_CHARS))
    lines = (line for text in _text_chunks(path, stats, on_bytes) for line in io.StringIO(text, newline=""))
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if options.text_field not in header:
        raise UserError(f"{path}: no column {options.text_field!r} (columns: {', '.join(header)}); "
                        f"set prep.text_field")
    column = header.index(options.text_field)
    malformed = MalformedRows(path, options, stats)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            malformed.num_rows += 1
            malformed.add(reader.line_num, f"invalid CSV ({error})")
            continue
        if not row:
            continue
        malformed.num_rows += 1
        if len(row) <= column:
            malformed.add(reader.line_num, f"row has {len(row)} fields, none in column {options.text_field!r}")
            continue
        yield row[column]
    malformed.finish()


def _read_parquet(path: Path, options: PrepConfig, stats: SourceStats, on_bytes: ByteCallback) -> Iterator[str]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise UserError(f"{path}: reading Parquet needs pyarrow; install it with `pip install pyarrow`") from error
    try:
        parquet = pyarrow.parquet.ParquetFile(path)
        names = parquet.schema_arrow.names
        if options.text_field not in names:
            raise UserError(f"{path}: no column {options.text_field!r} (columns: {', '.join(names)}); "
                            f"set prep.text_field")
        column_type = parquet.schema_arrow.field(options.text_field).type
        if not (pyarrow.types.is_string(column_type) or pyarrow.types.is_large_string(column_type)):
            raise UserError(f"{path}: column {options.text_field!r} holds {column_type}, not text; "
                            f"set prep.text_field to a text column")
        num_bytes, num_rows = path.stat().st_size, max(parquet.metadata.num_rows, 1)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[options.text_field]):
            for value in batch.column(0).to_pylist():
                yield value or ""  # a null counts as an empty document
            on_bytes(num_bytes * batch.num_rows // num_rows)
    except pyarrow.ArrowException as error:
        raise UserError(f"{path}: not a readable Parquet file ({error})") from error


READERS = {"text": _read_text, "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}

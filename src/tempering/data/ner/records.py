"""Read NER sentences — words and their IOB2 tags — from JSONL/JSON, CoNLL column files and Parquet.

Formats (chosen by extension; `.gz` of the text ones too):
- `.jsonl` / `.json`: rows `{"tokens": [...], "ner_tags": [...]}` with tags as strings, or as
  ids into a label list — `ner.labels` in the config, a `{"labels": [...]}` line before the rows
  (JSONL), or a `{"labels": [...], "rows": [...]}` object (JSON);
- `.conll`, `.iob`, `.bio`, `.txt`: CoNLL-2003 style, one word per line with its tag in the last
  whitespace-separated column, sentences separated by blank lines, `-DOCSTART-` lines skipped;
- `.parquet`: columns `tokens` and `ner_tags`.

A bad row (tokens and tags of different lengths, an unknown or malformed tag, an empty word)
is reported as file:line and skipped under prep's bad-line policy (`prep.max_bad_line_fraction`
of a file's rows, beyond which the file is an error). An IOB2 violation (`I-X` starting an
entity) is repaired or refused by `ner.scheme_errors`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tempering.config.schema import NerConfig, PrepConfig
from tempering.data.ner.scheme import is_tag, repair, scheme_errors
from tempering.data.sources import MalformedRows, SourceStats
from tempering.errors import UserError

JSON_SUFFIXES = (".jsonl", ".json")
COLUMN_SUFFIXES = (".conll", ".iob", ".bio", ".txt")
PARQUET_SUFFIX = ".parquet"
DOCSTART = "-DOCSTART-"


@dataclass(frozen=True)
class Sentence:
    """One labelled sentence: its words, one IOB2 tag per word, and where it was read."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    where: str  # file:line


@dataclass
class ReadReport:
    """What reading NER files found: sentences, skipped bad rows per file, repaired scheme errors."""

    num_sentences: int = 0
    num_repaired: int = 0  # sentences with an I- tag turned into B-
    stats: SourceStats = field(default_factory=SourceStats)

    @property
    def num_bad_rows(self) -> int:
        """Rows skipped as malformed, over all files."""
        return self.stats.num_malformed_lines


class _BadRow(ValueError):
    """A row that is skipped (counted, reported as file:line)."""


def read_sentences(inputs: list[str], ner: NerConfig, prep: PrepConfig,
                   report: ReadReport | None = None) -> list[Sentence]:
    """Every sentence of the files, directories or globs in `inputs`, in file order; UserError if none."""
    report = report if report is not None else ReadReport()
    sentences: list[Sentence] = []
    for path in discover_ner_files(inputs):
        malformed = MalformedRows(path, prep, report.stats)
        for where, words, tags, id_labels in _rows(path, ner):
            malformed.num_rows += 1
            try:
                sentence = _checked(where, words, tags, id_labels, ner, report)
            except _BadRow as bad:
                malformed.add(int(where.rsplit(":", 1)[1]), str(bad))
                continue
            sentences.append(sentence)
        malformed.finish()
    report.num_sentences += len(sentences)
    if not sentences:
        raise UserError(f"{', '.join(inputs)}: holds no labelled sentences")
    return sentences


def discover_ner_files(inputs: list[str]) -> list[Path]:
    """Files, directories (recursive) and globs → the sorted NER files they hold; UserError names a bad input."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and _kind(p) and not p.name.startswith(".")]
        elif path.is_file():
            if _kind(path) is None:
                raise UserError(f"{item}: not an NER file (use .jsonl, .json, .conll, .iob, .bio, .txt, .parquet, "
                                "or .gz of the text ones)")
            files = [path]
        else:
            files = [Path(p) for p in glob.glob(str(path), recursive=True) if _kind(Path(p))]
            if not files:
                raise UserError(f"{item}: no such file, directory or matching NER file")
        if not files:
            raise UserError(f"{item}: holds no NER file (.jsonl, .json, .conll, .iob, .bio, .txt, .parquet)")
        found.update(Path(os.path.abspath(p)) for p in files)
    return sorted(found)


def _kind(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(COLUMN_SUFFIXES):
        return "columns"
    if name.endswith(PARQUET_SUFFIX) and not path.name.lower().endswith(".gz"):
        return "parquet"
    return None


def _checked(where: str, words: object, tags: object, id_labels: list[str], ner: NerConfig,
             report: ReadReport) -> Sentence:
    """A Sentence from one row's words and tags (ids looked up in `id_labels`); _BadRow says what is wrong."""
    if words is None:
        raise _BadRow(str(tags))
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise _BadRow("'tokens' is not a list of strings")
    if not isinstance(tags, list):
        raise _BadRow("'ner_tags' is not a list")
    if len(words) != len(tags):
        raise _BadRow(f"{len(words)} tokens but {len(tags)} tags")
    if not words:
        raise _BadRow("no tokens")
    empty = next((i for i, w in enumerate(words) if not w.strip()), None)
    if empty is not None:
        raise _BadRow(f"token {empty} is empty or whitespace")
    tags = [_tag_name(tag, id_labels, ner.labels) for tag in tags]
    errors = scheme_errors(tags)
    if errors:
        if ner.scheme_errors == "error":
            raise UserError(f"{where}: {tags[errors[0]]} at token {errors[0]} does not continue an entity of its "
                            "type (IOB2); fix the data or set ner.scheme_errors=repair (turns it into B-)")
        tags = repair(tags)
        report.num_repaired += 1
    return Sentence(tuple(words), tuple(tags), where)


def _tag_name(tag: object, id_labels: list[str], closed: list[str]) -> str:
    """A tag as its string: ids are looked up in `id_labels`; strings must be IOB2 tags (and in `closed`, if set)."""
    if isinstance(tag, bool):
        raise _BadRow(f"tag {tag!r} is neither a string nor a label id")
    if isinstance(tag, int):
        if not id_labels:
            raise _BadRow(f"tag {tag} is an id, but no label list names the ids (ner.labels, or a "
                          "{\"labels\": [...]} line before the rows)")
        if not 0 <= tag < len(id_labels):
            raise _BadRow(f"unknown tag id {tag} (the label list has {len(id_labels)} labels)")
        tag = id_labels[tag]
    if not is_tag(tag):
        raise _BadRow(f"tag {tag!r} is not O, B-TYPE or I-TYPE")
    if closed and tag not in closed:
        raise _BadRow(f"unknown tag {tag!r} (not in ner.labels)")
    return tag


Row = tuple[str, object, object, list[str]]  # where, words, tags (or a problem), the labels tag ids name


def _rows(path: Path, ner: NerConfig) -> Iterator[Row]:
    kind = _kind(path)
    try:
        if kind == "json":
            yield from _json_rows(path, ner)
        elif kind == "columns":
            yield from ((where, words, tags, list(ner.labels)) for where, words, tags in _column_rows(path))
        else:
            yield from ((where, words, tags, list(ner.labels)) for where, words, tags in _parquet_rows(path))
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: cannot read the file ({error})") from error


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8-sig") if path.name.lower().endswith(".gz") \
        else open(path, encoding="utf-8-sig")


def _json_rows(path: Path, ner: NerConfig) -> Iterator[Row]:
    with _open_text(path) as handle:
        first = handle.readline()
        if first.lstrip().startswith(("[", "{")) and not path.name.lower().removesuffix(".gz").endswith(".jsonl"):
            text = first + handle.read()
            if _is_single_json(text):
                yield from _json_document_rows(path, text, ner)
                return
        labels = list(ner.labels)
        for number, line in enumerate(_chain(first, handle), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as error:
                yield where, None, f"invalid JSON ({getattr(error, 'msg', error)})", labels
                continue
            if isinstance(row, dict) and set(row) == {"labels"}:  # a label-list line for the id tags below
                labels = _label_list(row["labels"], where)
                continue
            yield where, *_row_fields(row), labels


def _is_single_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _json_document_rows(path: Path, text: str, ner: NerConfig) -> Iterator[Row]:
    """A .json file: an array of rows, or {"labels": [...], "rows": [...]}."""
    document = json.loads(text)
    labels = list(ner.labels)
    if isinstance(document, dict):
        if "labels" in document:
            labels = _label_list(document["labels"], str(path))
        document = document.get("rows", document.get("data"))
    if not isinstance(document, list):
        raise UserError(f"{path}: a .json NER file holds an array of rows or {{\"labels\": [...], \"rows\": [...]}}")
    for index, row in enumerate(document, 1):
        yield f"{path}:{index}", *_row_fields(row), labels


def _row_fields(row: object) -> tuple[object, object]:
    """(words, tags) of a JSON row, or (None, the problem)."""
    if not isinstance(row, dict) or "tokens" not in row or "ner_tags" not in row:
        return None, "no 'tokens' and 'ner_tags' fields"
    return row["tokens"], row["ner_tags"]


def _label_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(is_tag(v) for v in value):
        raise UserError(f"{where}: 'labels' must be a list of O / B-TYPE / I-TYPE tags")
    return list(value)


def _chain(first: str, rest) -> Iterator[str]:
    yield first
    yield from rest


def _column_rows(path: Path) -> Iterator[tuple[str, object, object]]:
    """CoNLL columns: word first, tag last; a blank line ends a sentence; -DOCSTART- lines are skipped."""
    words: list[str] = []
    tags: list[str] = []
    start, problem = 0, None
    with _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            columns = line.split()
            if not columns or columns[0] == DOCSTART:
                if words or problem:
                    yield f"{path}:{start}", (None if problem else words), (problem or tags)
                words, tags, problem = [], [], None
                continue
            start = start if words or problem else number
            if len(columns) < 2:
                problem = problem or f"line {number} has no tag column"
                continue
            words.append(columns[0])
            tags.append(columns[-1])
    if words or problem:
        yield f"{path}:{start}", (None if problem else words), (problem or tags)


def _parquet_rows(path: Path) -> Iterator[tuple[str, object, object]]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise UserError(f"{path}: reading Parquet needs pyarrow; install it with `pip install pyarrow`") from error
    number = 0
    try:
        for batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=4096, columns=["tokens", "ner_tags"]):
            for row in batch.to_pylist():
                number += 1
                yield f"{path}:{number}", row["tokens"], row["ner_tags"]
    except (pyarrow.ArrowException, KeyError) as error:
        raise UserError(f"{path}: not a Parquet file with 'tokens' and 'ner_tags' columns ({error})") from error

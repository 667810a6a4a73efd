"""Finding input files and reading documents: formats, text units, invalid UTF-8, malformed rows."""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
import sys
from pathlib import Path

import pytest

from tempering.config.schema import PrepConfig
from tempering.data import sources
from tempering.data.sources import SourceStats, discover_files, iter_documents
from tempering.errors import UserError


def read(files: list[Path], **options) -> tuple[list[str], SourceStats]:
    stats = SourceStats()
    return list(iter_documents(files, PrepConfig(**options), stats)), stats


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- discovering files ---------------------------------------------------------------------------

def test_discover_expands_dirs_recursively_and_globs_sorted_and_deduplicated(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    for name in ["a/x.txt", "a/deep/y.jsonl.gz", "a/z.csv", "a/notes.pdf", "a/.hidden.txt", ".git/c.txt", "b.md"]:
        (tmp_path / name).write_bytes(b"")
    found = discover_files([str(tmp_path / "a"), str(tmp_path / "*.md"), str(tmp_path / "a" / "x.txt")])
    expected = [tmp_path / "a/deep/y.jsonl.gz", tmp_path / "a/x.txt", tmp_path / "a/z.csv", tmp_path / "b.md"]
    assert found == sorted(expected)


def test_discover_scans_the_default_dir_when_no_input_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="data/raw does not exist"):
        discover_files([])
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "t.txt").write_text("hi")
    assert discover_files([]) == [tmp_path / "data" / "raw" / "t.txt"]


@pytest.mark.parametrize(("make", "item", "message"), [
    (lambda root: None, "missing.txt", "missing.txt: no such file or directory"),
    (lambda root: None, "nothing*.jsonl", "no file matches this pattern"),
    (lambda root: (root / "d").mkdir(), "d", "d: the directory holds no supported input file"),
    (lambda root: (root / "f.pdf").write_bytes(b""), "f.pdf", "f.pdf: unsupported file type"),
])
def test_discover_names_the_bad_input(tmp_path, make, item, message):
    make(tmp_path)
    with pytest.raises(UserError, match=re.escape(message)):
        discover_files([str(tmp_path / item)])


# --- text units ----------------------------------------------------------------------------------

TEXT = "first block\nstill first\n\n\n  indented second\n \t \nthird\r\nline two\r\n"


def test_text_units_block_file_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(TEXT.encode())
    assert read([path], text_unit="block")[0] == ["first block\nstill first", "  indented second",
                                                   "third\r\nline two"]
    assert read([path], text_unit="file")[0] == [TEXT]
    assert read([path], text_unit="line")[0] == ["first block", "still first", "", "", "  indented second",
                                                  " \t ", "third", "line two"]


def reference_blocks(text: str) -> list[str]:
    """Maximal runs of lines that are not whitespace-only, joined by newlines."""
    blocks, run = [], []
    for line in text.split("\n"):
        if line.strip():
            run.append(line)
        elif run:
            blocks.append("\n".join(run))
            run = []
    return blocks + (["\n".join(run)] if run else [])


@pytest.mark.parametrize("seed", range(6))
def test_blocks_match_a_line_by_line_reference_whatever_the_chunk_size(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    lines = [rng.choice(["", "", " ", "\t ", "a b", "  c", "dd "]) for _ in range(rng.randint(1, 60))]
    text = "\n".join(lines) + rng.choice(["", "\n", "\n\n"])
    path = tmp_path / "t.txt"
    path.write_text(text)
    for chunk_bytes in (1, 2, 5, 1 << 20):
        monkeypatch.setattr(sources, "CHUNK_BYTES", chunk_bytes)
        assert read([path])[0] == reference_blocks(text), (chunk_bytes, text)


def test_gzip_text_and_jsonl_and_byte_order_mark(tmp_path):
    with gzip.open(tmp_path / "t.txt.gz", "wb") as file:
        file.write("\ufeffone\n\ntwo\n".encode())
    with gzip.open(tmp_path / "r.jsonl.gz", "wt", encoding="utf-8") as file:
        file.write('{"text": "three"}\n')
    assert read([tmp_path / "t.txt.gz", tmp_path / "r.jsonl.gz"])[0] == ["one", "two", "three"]


# --- JSONL, JSON, CSV, Parquet ------------------------------------------------------------------

def test_jsonl_custom_text_field_and_null_is_an_empty_document(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"body": "a"}, {"body": None}, {"body": "b", "text": "no"}])
    assert read([path], text_field="body")[0] == ["a", "", "b"]


def test_json_array_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    assert read([path])[0] == ["a", "b"]


def test_malformed_jsonl_below_the_limit_is_skipped_and_counted(tmp_path):
    rows = [json.dumps({"text": f"doc {i}"}) for i in range(20)]
    rows[4] = '{"text": "broken'
    rows[9] = json.dumps({"title": "no text"})
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(rows) + "\n\n")
    documents, stats = read([path], max_bad_line_fraction=0.1)
    assert documents == [f"doc {i}" for i in range(20) if i not in (4, 9)]
    assert stats.malformed_lines == {str(path): 2}


def test_malformed_jsonl_above_the_limit_fails_naming_file_and_line(tmp_path):
    rows = [json.dumps({"text": f"doc {i}"}) for i in range(20)]
    rows[6] = "not json"
    rows[11] = "[1, 2]"
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(rows))
    with pytest.raises(UserError, match=re.escape(f"{path}:7: 2 of 20 lines are malformed")):
        read([path], max_bad_line_fraction=0.05)


def test_csv_column(tmp_path):
    path = tmp_path / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerows([["id", "content"], ["1", "plain"], ["2", 'multi\nline, "quoted"'], ["3", "x" * 200_000]])
    assert read([path], text_field="content")[0] == ["plain", 'multi\nline, "quoted"', "x" * 200_000]
    with pytest.raises(UserError, match=r"t\.csv: no column 'text' \(columns: id, content\)"):
        read([path])


def test_parquet_column(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "t.parquet"
    parquet.write_table(pyarrow.table({"n": [1, 2, 3], "body": ["a", None, "ç"]}), path)
    assert read([path], text_field="body")[0] == ["a", "", "ç"]
    with pytest.raises(UserError, match=r"column 'n' holds int64, not text"):
        read([path], text_field="n")


# --- invalid UTF-8 -------------------------------------------------------------------------------

def test_invalid_utf8_replace_counts_bytes_per_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 ok\n\nnext \xff\xfe block\n")
    good = tmp_path / "good.txt"
    good.write_text("fine")
    documents, stats = read([bad, good], invalid_utf8="replace")
    assert documents == ["caf\ufffd ok", "next \ufffd\ufffd block", "fine"]
    assert stats.replaced_bytes == {str(bad): 3}


def test_invalid_utf8_skip_skips_the_whole_file(tmp_path):
    bad = write_jsonl(tmp_path / "a.jsonl", [{"text": "kept?"}])
    with open(bad, "ab") as file:
        file.write(b'{"text": "\xc3\x28"}\n')
    good = write_jsonl(tmp_path / "b.jsonl", [{"text": "kept"}])
    documents, stats = read([bad, good], invalid_utf8="skip")
    assert documents == ["kept"]
    assert stats.skipped_files == [str(bad)]
    assert stats.replaced_bytes == {}


def test_parquet_without_pyarrow_says_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match=r"t\.parquet: reading Parquet needs pyarrow; install it"):
        read([path])


def test_a_truncated_gzip_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n' * 1000)[:-20])
    with pytest.raises(UserError, match=re.escape(f"{path}: cannot read the file")):
        read([path])

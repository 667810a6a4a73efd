"""Binary inputs (random bytes, NUL bytes, UTF-16, gzipped binary) are skipped, counted and never tokenized."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from tempering.config.schema import PrepConfig
from tempering.data import sources
from tempering.data.prep import run_prep
from tempering.data.shards import MANIFEST_FILE, TokenShards
from tempering.data.sources import SourceStats, iter_documents
from tempering.errors import UserError
from tempering.tokenizer import load_tokenizer, train_tokenizer
from tests.conftest import assert_user_error, run_temper

DOCUMENTS = [" ".join(text[:600].split()) for _, text in sorted(topics.items())[:12]]  # one line each
TEXT = "\n\n".join(DOCUMENTS) + "\n"
LATIN = "Le cœur déçu mais l'âme plutôt naïve rêva d'îles où brûlent les novæ."


def random_bytes(num_bytes: int = 100_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(num_bytes)


BINARIES = {
    "random.txt": random_bytes(),
    "random-no-nul.txt": random_bytes().replace(b"\0", b""),  # caught by the share of odd characters alone
    "nul.txt": TEXT[:300].encode() + b"\0" + TEXT[300:].encode(),
    "utf16.txt": TEXT.encode("utf-16"),
    "random.jsonl": random_bytes(),
    "random.txt.gz": gzip.compress(random_bytes()),
}


def read(files: list[Path], **options) -> tuple[list[str], SourceStats]:
    stats = SourceStats()
    return list(iter_documents(files, PrepConfig(**options), stats)), stats


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(DOCUMENTS, 400, directory, show_progress=False)
    return directory


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


# --- iter_documents ------------------------------------------------------------------------------

@pytest.mark.parametrize("invalid_utf8", ["replace", "skip"])
@pytest.mark.parametrize("name", list(BINARIES))
def test_a_binary_file_is_skipped_with_a_warning_and_the_text_beside_it_read(tmp_path, good, capsys, name,
                                                                            invalid_utf8):
    binary = tmp_path / name
    binary.write_bytes(BINARIES[name])
    documents, stats = read([binary, good], invalid_utf8=invalid_utf8)
    assert documents == DOCUMENTS
    assert stats.binary_skipped_files == [str(binary)]
    assert (stats.skipped_files, stats.replaced_bytes, stats.malformed_lines) == ([], {}, {})
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{binary}: looks binary" in warnings[0] and "file skipped" in warnings[0]


def test_text_with_a_few_invalid_bytes_or_in_latin1_is_not_binary_but_replaced(tmp_path):
    utf8 = tmp_path / "utf8.txt"
    utf8.write_bytes(TEXT.encode().replace(b"the", b"th\xff", 5))
    latin1 = tmp_path / "latin1.txt"  # one invalid byte per accented letter: 15% of the characters
    latin1.write_bytes(f"{LATIN}\n\n".encode("cp1252") * 50)
    logs = tmp_path / "log.txt"  # colour escapes and form feeds are control characters text may hold
    logs.write_text("\x1b[32mok\x1b[0m step 1\f\r\n" * 100)
    documents, stats = read([utf8, latin1, logs])
    assert stats.binary_skipped_files == []
    num_accented = sum(not char.isascii() for char in LATIN)
    assert stats.replaced_bytes == {str(utf8): 5, str(latin1): 50 * num_accented}
    assert documents[:len(DOCUMENTS)] == TEXT.replace("the", "th\ufffd", 5).rstrip("\n").split("\n\n")
    assert documents[len(DOCUMENTS)] == "".join(char if char.isascii() else "\ufffd" for char in LATIN)
    assert documents[-1].startswith("\x1b[32mok\x1b[0m step 1\f\r\n")


def test_a_sample_cut_inside_a_character_does_not_count_the_cut(tmp_path, monkeypatch):
    path = tmp_path / "accents.txt"
    path.write_text("é" * 10)
    monkeypatch.setattr(sources, "BINARY_SAMPLE_BYTES", 3)  # "é" and the first byte of the next
    assert read([path])[0] == ["é" * 10]
    assert sources.binary_reason("é".encode()[:1], complete=True) is not None  # a lone lead byte is invalid


# --- run_prep ------------------------------------------------------------------------------------

def test_prep_skips_binary_files_records_them_and_a_rerun_is_a_no_op(tmp_path, good, tokenizer_dir, capsys):
    binary = tmp_path / "random.txt"
    binary.write_bytes(random_bytes())
    summary = run_prep([str(tmp_path)], tokenizer_dir, tmp_path / "out", PrepConfig(val_fraction=0.0))
    bundle = load_tokenizer(tokenizer_dir)
    assert TokenShards(tmp_path / "out")[:].tolist() == [token for text in DOCUMENTS
                                                         for token in (*bundle.encode(text), bundle.eos_id)]
    assert summary["binary_skipped_files"] == 1 and summary["num_files"] == 2
    cleaning = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())["cleaning"]
    assert cleaning["binary_skipped_files"] == [str(binary)]
    assert cleaning["invalid_utf8_replaced_bytes"] == {}
    assert "files skipped (binary)" in capsys.readouterr().out

    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")}
    rerun = run_prep([str(tmp_path)], tokenizer_dir, tmp_path / "out", PrepConfig(val_fraction=0.0))
    assert rerun["up_to_date"] is True and rerun["binary_skipped_files"] == 1
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")} == stamps


def test_shards_from_before_binary_detection_are_rebuilt(tmp_path, good, tokenizer_dir):
    (tmp_path / "random.txt").write_bytes(random_bytes())
    run_prep([str(tmp_path)], tokenizer_dir, tmp_path / "out", PrepConfig())
    manifest_file = tmp_path / "out" / MANIFEST_FILE
    manifest = json.loads(manifest_file.read_text())
    del manifest["cleaning"]["binary_skipped_files"]  # as an older prep wrote it, perhaps tokenizing the binary
    manifest_file.write_text(json.dumps(manifest))
    summary = run_prep([str(tmp_path)], tokenizer_dir, tmp_path / "out", PrepConfig())
    assert summary["up_to_date"] is False and summary["binary_skipped_files"] == 1
    assert "binary_skipped_files" in json.loads(manifest_file.read_text())["cleaning"]


def test_only_binary_input_fails_and_creates_no_output_directory(tmp_path, tokenizer_dir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("random.txt", "random.txt.gz"):
        (inputs / name).write_bytes(BINARIES[name])
    output = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(UserError, match=r"no documents to write: read 0 from 2 file.*2 file\(s\) skipped as binary"):
        run_prep([str(inputs)], tokenizer_dir, output, PrepConfig())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in"]


def test_a_failed_all_binary_prep_leaves_the_previous_output_untouched(tmp_path, good, tokenizer_dir):
    run_prep([str(good)], tokenizer_dir, tmp_path / "out", PrepConfig())
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (tmp_path / "out").rglob("*")
              if path.is_file()}
    binary = tmp_path / "random.txt"
    binary.write_bytes(random_bytes())
    with pytest.raises(UserError, match="1 file\\(s\\) skipped as binary"):
        run_prep([str(binary)], tokenizer_dir, tmp_path / "out", PrepConfig())
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (tmp_path / "out").rglob("*")
            if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["good.txt", "out", "random.txt"]


# --- the real CLI --------------------------------------------------------------------------------

def test_cli_prep_of_only_binary_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tokenizer_dir):
    binary = tmp_path / "random.txt"
    binary.write_bytes(random_bytes())
    result = run_temper("prep", "--input", binary, "--tokenizer", tokenizer_dir, "--output", tmp_path / "out")
    assert_user_error(result, "no documents to write", "1 file(s) skipped as binary")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "skipped as binary" in errors[0], result.stderr
    assert f"{binary}: looks binary" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_tokenizer_train_skips_a_binary_input(tmp_path, good):
    binary = tmp_path / "random.txt"
    binary.write_bytes(random_bytes())
    result = run_temper("tokenizer", "train", "--input", binary, good, "--vocab-size", 400,
                        "--output", tmp_path / "tok", check=True)
    assert f"{binary}: looks binary" in one_line(result.stderr)
    alone = train_tokenizer(read([good])[0], 400, tmp_path / "alone", show_progress=False)
    assert load_tokenizer(tmp_path / "tok").fingerprint == alone.fingerprint

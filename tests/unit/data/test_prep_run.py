"""`run_prep` end to end on real text: tokens, splits, no-op re-runs, and the errors that protect output."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest

from tempering.config.schema import PrepConfig
from tempering.data.prep import run_prep
from tempering.data.shards import MANIFEST_FILE, TokenShards
from tempering.errors import UserError
from tempering.tokenizer import EOS, load_tokenizer, train_tokenizer

DOCUMENTS = [text[:1200] for _, text in sorted(topics.items())[:24]]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(DOCUMENTS, 512, directory, show_progress=False)
    return directory


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


def is_val(text: str, fraction: float) -> bool:
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def split_documents(output: Path, split: str) -> list[tuple[int, ...]]:
    shards = TokenShards(output, split)
    tokens = shards[:].tolist()
    ends = (shards.document_boundaries() + 1).tolist()
    return [tuple(tokens[start:end]) for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def test_shards_hold_each_kept_document_then_eos_split_by_content_hash(tmp_path, tokenizer_dir):
    first = write_jsonl(tmp_path / "a.jsonl", [*DOCUMENTS[:12], "", DOCUMENTS[0]])
    second = write_jsonl(tmp_path / "b.jsonl", [DOCUMENTS[1], *DOCUMENTS[12:], "  "])
    summary = run_prep([str(tmp_path)], tokenizer_dir, tmp_path / "out", PrepConfig(val_fraction=0.3, seq_len=16))

    bundle = load_tokenizer(tokenizer_dir)
    for split, wanted in (("train", False), ("val", True)):
        expected = [tuple(bundle.encode(text)) + (bundle.eos_id,)
                    for text in DOCUMENTS if is_val(text, 0.3) == wanted]
        assert split_documents(tmp_path / "out", split) == expected
        assert summary[split]["documents"] == len(expected)
        assert summary[split]["tokens"] == sum(map(len, expected))
    assert 0 < summary["val"]["documents"] < len(DOCUMENTS)
    assert (summary["documents_read"], summary["documents_kept"]) == (len(DOCUMENTS) + 4, len(DOCUMENTS))
    assert summary["dropped"] == {"empty": 2, "duplicate": 2}

    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["tokenizer"]["fingerprint"] == bundle.fingerprint
    assert manifest["tokenizer"]["eos_id"] == bundle.eos_id == 1
    assert manifest["dtype"] == "uint16"
    assert manifest["seq_len"] == 16
    assert manifest["sources"] == [
        {"path": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
         "num_bytes": file.stat().st_size} for file in (first, second)]
    assert manifest["cleaning"]["removed"] == {"empty": 2, "duplicate": 2}


def test_val_split_does_not_depend_on_file_order_or_batching(tmp_path, tokenizer_dir):
    (tmp_path / "in1").mkdir()
    (tmp_path / "in2").mkdir()
    write_jsonl(tmp_path / "in1" / "x.jsonl", DOCUMENTS)
    write_jsonl(tmp_path / "in2" / "a.jsonl", DOCUMENTS[::-1][:10])
    write_jsonl(tmp_path / "in2" / "b.jsonl", DOCUMENTS[::-1][10:])
    run_prep([str(tmp_path / "in1")], tokenizer_dir, tmp_path / "o1", PrepConfig(val_fraction=0.3))
    run_prep([str(tmp_path / "in2")], tokenizer_dir, tmp_path / "o2", PrepConfig(val_fraction=0.3, batch_size=3))
    assert sorted(split_documents(tmp_path / "o1", "val")) == sorted(split_documents(tmp_path / "o2", "val"))
    assert sorted(split_documents(tmp_path / "o1", "train")) == sorted(split_documents(tmp_path / "o2", "train"))


def test_rerun_is_a_no_op_and_a_fresh_run_is_byte_identical(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "data.jsonl", DOCUMENTS)
    options = PrepConfig(val_fraction=0.2, shard_tokens=700)
    output = tmp_path / "out"  # inside the input dir: its own files must not become inputs
    run_prep([str(tmp_path)], tokenizer_dir, output, options)
    first = files_of(output)
    assert len([name for name in first if name.startswith("train/")]) > 1
    stamps = {path: path.stat().st_mtime_ns for path in output.rglob("*")}

    summary = run_prep([str(tmp_path)], tokenizer_dir, output, options.model_copy(update={"batch_size": 5}))
    assert summary["up_to_date"] is True
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*")} == stamps

    os.rename(output, tmp_path.parent / f"{tmp_path.name}-first")
    run_prep([str(tmp_path)], tokenizer_dir, output, options)
    assert files_of(output) == first


def test_changed_options_rebuild_the_output_in_place(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "data.jsonl", DOCUMENTS)
    run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig(val_fraction=0.0))
    summary = run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig(val_fraction=0.3))
    assert summary["up_to_date"] is False and summary["val"]["documents"] > 0
    assert TokenShards(tmp_path / "out", "val").num_documents == summary["val"]["documents"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.jsonl", "out"]  # no temp dirs left


def test_text_that_spells_a_special_token_stays_text(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "data.jsonl", [f"before {EOS} after", "plain"])
    run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig())
    shards, bundle = TokenShards(tmp_path / "out"), load_tokenizer(tokenizer_dir)
    assert shards.num_documents == 2
    np.testing.assert_array_equal(shards.document_boundaries(), [len(shards) - 2 - len(bundle.encode("plain")),
                                                                 len(shards) - 1])
    assert bundle.decode(shards[:]) == f"before {EOS} after{EOS}plain{EOS}"


def test_output_from_another_tokenizer_is_refused_and_left_untouched(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "data.jsonl", DOCUMENTS[:4])
    run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig())
    before = files_of(tmp_path / "out")
    other = train_tokenizer(DOCUMENTS[:10], 400, tmp_path / "other", show_progress=False)
    with pytest.raises(UserError, match=f"holds shards from another tokenizer .*this tokenizer {other.fingerprint}"):
        run_prep([str(data)], tmp_path / "other", tmp_path / "out", PrepConfig(val_fraction=0.5))
    assert files_of(tmp_path / "out") == before


def test_output_with_foreign_files_is_refused(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "data.jsonl", DOCUMENTS[:4])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="already holds files .*thesis.tex.* but no manifest.json"):
        run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig())
    assert files_of(tmp_path / "out") == {"thesis.tex": b"precious"}


def test_empty_input_is_an_error_and_writes_nothing(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "data.jsonl", ["", " \n "])
    with pytest.raises(UserError, match="no documents to write: read 2 from 1 file.*2 empty"):
        run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.jsonl"]


def test_a_directory_that_is_not_a_tokenizer_is_an_error(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ["x"])
    (tmp_path / "notok").mkdir()
    with pytest.raises(UserError, match="is not a tokenizer directory"):
        run_prep([str(data)], tmp_path / "notok", tmp_path / "out", PrepConfig())
    assert not (tmp_path / "out").exists()


def test_a_val_split_shorter_than_one_sequence_is_warned_about(tmp_path, tokenizer_dir, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", DOCUMENTS)
    summary = run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig(val_fraction=0.1, seq_len=4096))
    assert 0 < summary["val"]["tokens"] < 4097
    assert "fewer than seq_len + 1 = 4,097" in " ".join(capsys.readouterr().err.split())


def test_a_damaged_shard_makes_the_rerun_rebuild(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "data.jsonl", DOCUMENTS[:6])
    run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig())
    before = files_of(tmp_path / "out")
    shard = tmp_path / "out" / "train" / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-6])
    summary = run_prep([str(data)], tokenizer_dir, tmp_path / "out", PrepConfig())
    assert summary["up_to_date"] is False
    assert files_of(tmp_path / "out") == before

"""The foundation commands through the real CLI: sample corpus, tokenizer, prep, config, presets."""

from __future__ import annotations

import json

import numpy as np

from tempering.config.loading import all_keys
from tempering.data.shards import TokenShards
from tempering.tokenizer import load_tokenizer
from tests.conftest import assert_user_error, run_temper


def test_sample_corpus_has_two_domains_split_by_document(workspace):
    for domain in ("prose", "code"):
        ids = {}
        for split in ("train", "val"):
            rows = [json.loads(line) for line in (workspace / "corpus" / domain / f"{split}.jsonl").open()]
            assert rows and all(row["text"].strip() for row in rows)
            ids[split] = {row["id"] for row in rows}
        assert not ids["train"] & ids["val"]


def test_prep_shards_hold_each_document_then_eos(workspace):
    tokenizer = load_tokenizer(workspace / "tok")
    manifest = json.loads((workspace / "shards" / "manifest.json").read_text())
    assert manifest["tokenizer"]["fingerprint"] == tokenizer.fingerprint
    assert manifest["dtype"] == "uint16"
    train, val = TokenShards(workspace / "shards", "train"), TokenShards(workspace / "shards", "val")
    assert train.num_documents > 0 and val.num_documents > 0
    texts = [json.loads(line)["text"] for name in ("train", "val")
             for line in (workspace / "corpus" / "prose" / f"{name}.jsonl").open()]
    encoded = {tuple(ids) for ids in tokenizer.encode_batch(texts)}
    tokens = train.read(0, train.num_tokens)
    ends = train.document_boundaries()
    assert len(ends) == train.num_documents and tokens[-1] == tokenizer.eos_id
    starts = np.concatenate([[0], ends[:-1] + 1])
    for start, end in list(zip(starts, ends, strict=True))[:50]:
        assert tuple(tokens[start:end].tolist()) in encoded  # a whole document, as the tokenizer encodes it


def test_prep_rerun_is_a_no_op(workspace):
    manifest = workspace / "shards" / "manifest.json"
    shard = next((workspace / "shards" / "train").iterdir())
    before = (manifest.read_bytes(), shard.read_bytes(), shard.stat().st_mtime_ns)
    run_temper("prep", "--input", workspace / "corpus" / "prose", "--tokenizer", workspace / "tok",
               "--output", workspace / "shards", "--val-fraction", 0.05, "--seq-len", 32, check=True)
    assert (manifest.read_bytes(), shard.read_bytes(), shard.stat().st_mtime_ns) == before


def test_prep_and_tokenizer_bad_inputs(workspace, tmp_path):
    tok, corpus = workspace / "tok", workspace / "corpus" / "prose"
    assert_user_error(run_temper("prep", "--input", tmp_path / "missing.txt", "--tokenizer", tok,
                                 "--output", tmp_path / "out"), "missing.txt")
    (tmp_path / "not_tok").mkdir()
    assert_user_error(run_temper("prep", "--input", corpus, "--tokenizer", tmp_path / "not_tok",
                                 "--output", tmp_path / "out"), "not_tok", "tokenizer.json")
    assert_user_error(run_temper("prep", "--input", corpus, "--tokenizer", tok, "--output", tmp_path / "out",
                                 "prep.dedupe=false"), "unknown key prep.dedupe — did you mean prep.dedup?")
    other = tmp_path / "other_tok"
    run_temper("tokenizer", "train", "--input", workspace / "corpus" / "code" / "val.jsonl",
               "--vocab-size", 400, "--output", other, check=True)
    before = (workspace / "shards" / "manifest.json").read_bytes()
    assert_user_error(run_temper("prep", "--input", corpus, "--tokenizer", other, "--output", workspace / "shards"),
                      "another tokenizer")
    assert (workspace / "shards" / "manifest.json").read_bytes() == before
    assert_user_error(run_temper("tokenizer", "train", "--input", corpus, "--vocab-size", 400, "--output", other),
                      "--overwrite")
    assert_user_error(run_temper("tokenizer", "train", "--input", tmp_path / "nothing-*.txt", "--vocab-size", 400,
                                 "--output", tmp_path / "t"), "nothing-*.txt")


def test_config_show_schema_and_presets(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("training:\n  batch_size: 2\n  max_steps: 5\n")
    shown = run_temper("config", "show", config, "training.batch_size=3", check=True).stdout
    assert "batch_size: 3" in shown and "max_steps: 5" in shown
    schema = run_temper("config", "schema", check=True).stdout
    assert all(f"\n{key}  (" in "\n" + schema for key in all_keys())
    presets = run_temper("presets", check=True).stdout
    for name, params in (("tiny", "0.14M"), ("nano", "10.10M"), ("medium", "151.80M")):
        assert name in presets and params in presets
    config.write_text("training:\n  batch_size: 2\n  lerning_rate: 0.1\n")
    assert_user_error(run_temper("config", "show", config),
                      f"{config}:3: unknown key training.lerning_rate — did you mean training.learning_rate?")

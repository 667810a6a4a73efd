"""The token-shard format: writer/reader round trip, dtypes, shard boundaries, atomic commit, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tempering.data.shards import MANIFEST_FILE, TokenShards, TokenShardsBuilder, read_manifest
from tempering.errors import UserError

EOS = 1


def documents(vocab_size: int, seed: int = 0, count: int = 9) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Ids avoid EOS inside a document, as prep guarantees; the top id exercises the dtype's range.
    return [np.append(rng.choice(np.array([2, 3, vocab_size - 1]), size=int(rng.integers(1, 12))), EOS)
            for _ in range(count)]


def build(output, docs_by_split: dict, *, vocab_size: int, shard_tokens: int = 10) -> dict:
    with TokenShardsBuilder(output, vocab_size=vocab_size, eos_id=EOS, shard_tokens=shard_tokens) as builder:
        for split, docs in docs_by_split.items():
            for start in range(0, len(docs), 2):  # several writes, as prep does per batch
                builder.writers[split].write(np.concatenate(docs[start:start + 2]))
        return builder.commit(tokenizer={"fingerprint": "f" * 16, "path": "/tok", "vocab_size": vocab_size,
                                         "eos_id": EOS}, seq_len=8, sources=[], cleaning={}, options={})


@pytest.mark.parametrize(("vocab_size", "dtype"), [(512, np.uint16), (65_536, np.uint16), (65_537, np.uint32),
                                                  (200_000, np.uint32)])
def test_round_trip_across_shard_boundaries(tmp_path, vocab_size, dtype):
    train, val = documents(vocab_size, 0), documents(vocab_size, 1, count=3)
    manifest = build(tmp_path / "out", {"train": train, "val": val}, vocab_size=vocab_size)
    expected = np.concatenate(train)
    shards = TokenShards(tmp_path / "out", "train")
    assert shards.dtype == dtype
    assert manifest["dtype"] == np.dtype(dtype).name
    assert len(shards) == shards.num_tokens == len(expected)
    np.testing.assert_array_equal(shards[:], expected)
    for start, length in [(0, 10), (5, 10), (9, 2), (3, len(expected) - 3), (len(expected) - 1, 1)]:
        np.testing.assert_array_equal(shards.read(start, length), expected[start:start + length])
    assert shards[-1] == EOS and shards[0] == expected[0]
    np.testing.assert_array_equal(shards.document_boundaries(), np.cumsum([len(doc) for doc in train]) - 1)
    assert shards.num_documents == len(train)
    sizes = [entry["num_tokens"] for entry in manifest["splits"]["train"]["shards"]]
    assert sizes[:-1] == [10] * (len(sizes) - 1) and sum(sizes) == len(expected)
    assert sum(entry["num_documents"] for entry in manifest["splits"]["train"]["shards"]) == len(train)
    raw = np.fromfile(tmp_path / "out" / "train" / "shard-00000.bin", dtype=np.dtype(dtype).newbyteorder("<"))
    np.testing.assert_array_equal(raw, expected[:10])
    np.testing.assert_array_equal(TokenShards(tmp_path / "out", "val")[:], np.concatenate(val))
    assert (shards.vocab_size, shards.eos_id, shards.fingerprint) == (vocab_size, EOS, "f" * 16)


def test_out_of_range_reads_raise_index_error(tmp_path):
    build(tmp_path / "out", {"train": documents(512)}, vocab_size=512)
    shards = TokenShards(tmp_path / "out")
    with pytest.raises(IndexError):
        shards.read(len(shards) - 2, 3)
    with pytest.raises(IndexError):
        shards[len(shards)]


def test_a_failed_build_leaves_the_previous_output_untouched(tmp_path):
    build(tmp_path / "out", {"train": documents(512)}, vocab_size=512)
    before = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    with pytest.raises(RuntimeError), \
            TokenShardsBuilder(tmp_path / "out", vocab_size=512, eos_id=EOS, shard_tokens=4) as builder:
        builder.writers["train"].write(np.array([5, 5, 1]))
        raise RuntimeError("crash mid-build")
    after = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert after == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no temp dir left behind


def test_truncated_shard_is_an_error_naming_the_file(tmp_path):
    build(tmp_path / "out", {"train": documents(512)}, vocab_size=512)
    shard = tmp_path / "out" / "train" / "shard-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(UserError, match=re.escape(f"{shard} is 18 bytes but the manifest says 20")):
        TokenShards(tmp_path / "out")


def test_missing_or_corrupt_manifest_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path} holds no {MANIFEST_FILE}"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / MANIFEST_FILE} is unreadable")):
        TokenShards(tmp_path)
    build(tmp_path / "out", {"train": documents(512)}, vocab_size=512)
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    del manifest["tokenizer"]["eos_id"]
    (tmp_path / "out" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="is damaged .*'eos_id'"):
        TokenShards(tmp_path / "out")

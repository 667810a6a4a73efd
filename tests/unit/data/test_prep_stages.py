"""`run_prep` with the corpus stages: planted cases removed, counts per source, determinism, no-op re-runs."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest

from tempering.config.schema import PrepConfig
from tempering.data.near_dedup import (
    MinHashParams,
    NearDedupIndex,
    distinct_shingles,
    exact_jaccard,
    minhash_bands,
)
from tempering.data.prep import run_prep
from tempering.data.shards import MANIFEST_FILE, TokenShards
from tempering.data.units import Unit
from tempering.errors import UserError
from tempering.tokenizer import load_tokenizer, train_tokenizer
from tests.unit.data.test_quality import GOOD, PLANTED

DOCUMENTS = [text[:1200] for _, text in sorted(topics.items())[:40]]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(DOCUMENTS, 512, directory, show_progress=False)
    return directory


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


def written_texts(output: Path, tokenizer_dir: Path) -> list[str]:
    """The documents in the train split, decoded."""
    bundle = load_tokenizer(tokenizer_dir)
    shards = TokenShards(output, "train")
    tokens, ends = shards[:].tolist(), (shards.document_boundaries() + 1).tolist()
    return [bundle.decode(tokens[start:end - 1]) for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def one_word_changed(text: str, position: int) -> str:
    words = text.split(" ")
    words[position] = "CHANGED"
    return " ".join(words)


def planted_corpus(root: Path) -> tuple[list[str], list[str]]:
    """Two sources: `web` holds 20 documents and near-copies of 2 of them; `docs` 20 others and a copy of a web one."""
    web = DOCUMENTS[:20] + [one_word_changed(DOCUMENTS[2], 40), DOCUMENTS[5] + " One more sentence at the end."]
    docs = DOCUMENTS[20:] + [one_word_changed(DOCUMENTS[9], 12)]
    write_jsonl(root / "web" / "part1.jsonl", web[:10])
    write_jsonl(root / "web" / "part2.jsonl", web[10:])
    write_jsonl(root / "docs" / "all.jsonl", docs)
    return web, docs


def test_near_dedup_removes_planted_copies_and_counts_them_per_source(tmp_path, tokenizer_dir):
    web, docs = planted_corpus(tmp_path / "in")
    summary = run_prep([str(tmp_path / "in")], tokenizer_dir, tmp_path / "out", PrepConfig(near_dedup=True))
    # Input order is docs/all.jsonl, then web/: the first of each cluster stays, so docs' copy of
    # DOCUMENTS[9] is kept and the original in web goes with web's two near-copies.
    kept = docs + DOCUMENTS[:9] + DOCUMENTS[10:20]
    assert written_texts(tmp_path / "out", tokenizer_dir) == kept
    stage = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())["cleaning"]["stages"]["near_dedup"]
    removed_chars = len(web[20]) + len(web[21]) + len(DOCUMENTS[9])
    assert stage["sources"]["web"] == {
        "documents_in": 22, "characters_in": sum(map(len, web)), "documents_removed": 3,
        "characters_removed": removed_chars, "documents_out": 19, "characters_out": sum(map(len, web)) - removed_chars}
    assert (stage["sources"]["docs"]["documents_removed"], stage["sources"]["docs"]["documents_out"]) == (0, 21)
    assert stage["clusters"] == 3 and stage["settings"]["minhash_perm"] == 112
    assert stage["settings"]["bands"] * stage["settings"]["rows"] <= 112
    assert summary["stages"]["near_dedup"] == stage


def test_every_stage_is_recorded_and_the_output_is_the_same_for_any_worker_count(tmp_path, tokenizer_dir):
    web, docs = planted_corpus(tmp_path / "in")
    write_jsonl(tmp_path / "in" / "junk" / "junk.jsonl", list(PLANTED.values()))
    options = PrepConfig(near_dedup=True, verify_jaccard=True, quality_filter=True, quality_min_words=20,
                         chunk_size=500, dataset_limit="docs=15", val_fraction=0.2)
    run_prep([str(tmp_path / "in")], tokenizer_dir, tmp_path / "one", options)
    run_prep([str(tmp_path / "in")], tokenizer_dir, tmp_path / "two", options.model_copy(update={"workers": 2}))
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    manifest = json.loads((tmp_path / "one" / MANIFEST_FILE).read_text())
    stages = manifest["cleaning"]["stages"]
    assert list(stages) == ["chunking", "quality", "near_dedup", "limits"]
    assert set(stages["chunking"]["sources"]) == {"web", "docs", "junk"}
    assert stages["chunking"]["settings"] == {"chunk_size": 500, "chunk_unit": "chars"}
    for name, stage in stages.items():  # each stage passes on what the next receives
        following = list(stages)[list(stages).index(name) + 1:]
        if following:
            for source, counts in stage["sources"].items():
                assert counts["documents_out"] == stages[following[0]]["sources"][source]["documents_in"]
    assert stages["limits"]["sources"]["docs"]["documents_out"] == 15
    assert manifest["cleaning"]["source_of_file"][str(tmp_path / "in" / "junk" / "junk.jsonl")] == "junk"


def test_each_quality_rule_removes_its_planted_case_through_prep(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "in.jsonl", [GOOD, *PLANTED.values()])
    summary = run_prep([str(tmp_path / "in.jsonl")], tokenizer_dir, tmp_path / "out", PrepConfig(quality_filter=True))
    assert written_texts(tmp_path / "out", tokenizer_dir) == [GOOD]
    by_rule = summary["stages"]["quality"]["removed_by_rule"]["in"]
    assert by_rule == dict.fromkeys(PLANTED, 1)


def test_limits_cut_each_source_at_the_exact_count(tmp_path, tokenizer_dir):
    planted_corpus(tmp_path / "in")
    bundle = load_tokenizer(tokenizer_dir)
    # docs: 21 documents; its first ones whose tokens (with EOS) add up to at most the limit are kept.
    sizes = [len(bundle.encode(text)) + 1 for text in DOCUMENTS[20:]]
    limit = sum(sizes[:7]) + sizes[7] // 2
    run_prep([str(tmp_path / "in")], tokenizer_dir, tmp_path / "out",
             PrepConfig(dataset_limit=f"web=4,docs={limit}tokens"))
    assert written_texts(tmp_path / "out", tokenizer_dir) == DOCUMENTS[20:27] + DOCUMENTS[:4]  # docs/ before web/


def test_max_source_fraction_caps_the_largest_source(tmp_path, tokenizer_dir):
    inputs = [str(write_jsonl(tmp_path / "in" / "big.jsonl", DOCUMENTS[:30])),
              str(write_jsonl(tmp_path / "in" / "small.jsonl", DOCUMENTS[30:]))]
    summary = run_prep(inputs, tokenizer_dir, tmp_path / "out", PrepConfig(max_source_fraction=0.6))
    kept = summary["stages"]["limits"]["tokens_kept"]
    assert kept["small"] == sum(len(load_tokenizer(tokenizer_dir).encode(t)) + 1 for t in DOCUMENTS[30:])
    assert kept["big"] <= 0.6 * (kept["big"] + kept["small"]) + 1e-9
    assert kept["big"] + max(len(t) for t in DOCUMENTS) > 0.6 * (kept["big"] + kept["small"])  # cut no earlier than needed
    with pytest.raises(UserError, match="below 1/2"):
        run_prep(inputs, tokenizer_dir, tmp_path / "out2", PrepConfig(max_source_fraction=0.4))


def test_same_settings_are_a_no_op_and_other_settings_rebuild(tmp_path, tokenizer_dir):
    planted_corpus(tmp_path / "in")
    options = PrepConfig(near_dedup=True, quality_filter=True, quality_min_words=20)
    output = tmp_path / "out"
    run_prep([str(tmp_path / "in")], tokenizer_dir, output, options)
    stamps = {path: path.stat().st_mtime_ns for path in output.rglob("*")}
    again = run_prep([str(tmp_path / "in")], tokenizer_dir, output, options.model_copy(update={"workers": 2}))
    assert again["up_to_date"] is True
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*")} == stamps
    for change in ({"near_dedup_threshold": 0.5}, {"quality_min_words": 30}, {"near_dedup": False},
                   {"chunk_size": 300}):
        rebuilt = run_prep([str(tmp_path / "in")], tokenizer_dir, output, options.model_copy(update=change))
        assert rebuilt["up_to_date"] is False, change
        stage_settings = json.loads((output / MANIFEST_FILE).read_text())["options"]
        assert all(stage_settings[key] == value for key, value in change.items())


def test_chunks_are_documents_and_pick_their_split_by_their_own_content(tmp_path, tokenizer_dir):
    # Paragraphs of 1,200 characters under a 1,300 target: each paragraph becomes one chunk.
    paragraphs = [" ".join(text.split()) for text in DOCUMENTS]
    paragraphs = [text for text in paragraphs if len(text) > 1000][:10]
    write_jsonl(tmp_path / "in.jsonl", ["\n\n".join(paragraphs)])
    summary = run_prep([str(tmp_path / "in.jsonl")], tokenizer_dir, tmp_path / "out",
                       PrepConfig(chunk_size=1300, val_fraction=0.3))
    assert summary["train"]["documents"] + summary["val"]["documents"] == 10
    assert 0 < summary["val"]["documents"] < 10
    assert written_texts(tmp_path / "out", tokenizer_dir) == [text for text in paragraphs if not is_val(text)]
    counts = summary["stages"]["chunking"]["sources"]["in"]
    assert (counts["documents_in"], counts["documents_out"]) == (1, 10)


def is_val(text: str) -> bool:
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest()[:8], "big") < 0.3 * 2**64


def test_everything_removed_is_an_error_that_writes_nothing(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "in.jsonl", list(PLANTED.values()))
    with pytest.raises(UserError, match="removed by quality"):
        run_prep([str(tmp_path / "in.jsonl")], tokenizer_dir, tmp_path / "out", PrepConfig(quality_filter=True))
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]


def test_exact_checks_in_several_batches_give_the_same_output(tmp_path, tokenizer_dir, monkeypatch):
    import tempering.data.filtering as filtering

    planted_corpus(tmp_path / "in")
    options = PrepConfig(near_dedup=True, verify_jaccard=True)
    first = run_prep([str(tmp_path / "in")], tokenizer_dir, tmp_path / "one", options)
    monkeypatch.setattr(filtering, "VERIFY_BUDGET_BYTES", 3000)  # about one pair per batch
    again = run_prep([str(tmp_path / "in")], tokenizer_dir, tmp_path / "many", options)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "many")
    assert first["stages"]["near_dedup"]["verified_pairs"] == again["stages"]["near_dedup"]["verified_pairs"] == 3


class CountedUnits:
    """Stands in for CorpusUnits: the texts as units, counting the passes over them."""

    def __init__(self, texts: list[str]):
        self.texts, self.num_units, self.passes = texts, len(texts), 0

    def iterate(self, wanted=None, on_bytes=None):
        self.passes += 1
        for index, text in enumerate(self.texts):
            if wanted is None or wanted[index]:
                yield Unit(index, 0, text, b"")


def test_exact_checks_read_each_cluster_once_within_a_budget_of_real_bytes(monkeypatch):
    import tempering.data.filtering as filtering

    # Four copies of ten documents, each copy after all of the one before (as in a corpus of copies).
    texts = [text if copy == 0 else f"{text} (copy {copy})" for copy in range(4) for text in DOCUMENTS[:10]]
    params = MinHashParams(112, 14, 8)
    hashes, sizes = minhash_bands(texts, params)
    index = NearDedupIndex(params, keep_sizes=True)
    index.add(hashes, np.ones(len(texts), bool), sizes)
    first, second = index.candidate_pairs(partners=32)
    assert len(first) == 10 * 6  # every two copies of each document
    cluster_bytes = [8 * int(sizes[document::10].sum()) for document in range(10)]
    budget = 2 * max(cluster_bytes) + 8
    monkeypatch.setattr(filtering, "VERIFY_BUDGET_BYTES", budget)
    held, plan = [], filtering._pair_batches

    def planned(first, second, sizes):
        batches = plan(first, second, sizes)
        held.extend(8 * int(sizes[np.union1d(first[start:end], second[start:end])].sum()) for start, end in batches)
        return batches

    monkeypatch.setattr(filtering, "_pair_batches", planned)
    units = CountedUnits(texts)
    similar = filtering._verified(units, first, second, index.shingle_sizes(), 0.8, lambda label: nullcontext(len))
    expected = [exact_jaccard(distinct_shingles(texts[a]), distinct_shingles(texts[b])) >= 0.8
                for a, b in zip(first.tolist(), second.tolist(), strict=True)]
    assert similar.tolist() == expected and all(expected)
    assert max(held) <= budget  # the bytes of the hashes really held, not an estimate from the text's length
    assert units.passes == len(held) == 5  # two whole clusters a pass


def test_a_pair_larger_than_the_budget_is_a_batch_of_its_own(monkeypatch):
    import tempering.data.filtering as filtering

    monkeypatch.setattr(filtering, "VERIFY_BUDGET_BYTES", 100)
    sizes = np.array([4, 4, 4, 20, 20, 1], np.uint32)  # 32, 32, 32, 160, 160, 8 bytes
    first, second = np.array([0, 0, 1, 3, 0]), np.array([1, 2, 2, 4, 5])
    assert filtering._pair_batches(first, second, sizes) == [(0, 3), (3, 4), (4, 5)]


def test_token_chunks_hold_at_most_the_target_tokens(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "in.jsonl", ["\n\n".join(DOCUMENTS[:8])])
    run_prep([str(tmp_path / "in.jsonl")], tokenizer_dir, tmp_path / "out", PrepConfig(chunk_size=96, chunk_unit="tokens"))
    shards = TokenShards(tmp_path / "out", "train")
    ends = shards.document_boundaries()
    sizes = (ends - np.concatenate([[-1], ends[:-1]]) - 1).tolist()  # tokens of each document, EOS excluded
    assert len(sizes) > 8 and max(sizes) <= 96
    texts = written_texts(tmp_path / "out", tokenizer_dir)
    assert " ".join(texts).split() == "\n\n".join(DOCUMENTS[:8]).split()

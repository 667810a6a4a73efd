"""`temper prep` corpus stages through the CLI: the perplexity filter with a checkpoint trained here, bad settings."""

from __future__ import annotations

import json
import random
from pydoc_data.topics import topics

import pytest

from tempering.data.shards import MANIFEST_FILE, TokenShards
from tempering.tokenizer import load_tokenizer
from tests.conftest import assert_user_error, run_temper

PROSE = [text[:1500] for _, text in sorted(topics.items())[:40]]
# Letters the prose tokenizer has never seen together: junk to a model trained on English prose.
JUNK_ALPHABET = "ĀāĂăĄąĆćĈĉĊċČčĎďĐđĒēĔĕĖėĘęĚěĜĝĞğ§¶ÆØ¤¥£€ж漢字かなカナ"


def garbage() -> list[str]:
    """Four random character strings and four documents of one junk line repeated."""
    rng = random.Random(0)
    strings = ["".join(rng.choice(JUNK_ALPHABET + " ") for _ in range(600)) for _ in range(4)]
    repeated = ["".join(rng.choice(JUNK_ALPHABET) for _ in range(12)) + "\n" for _ in range(4)]
    return strings + [line * 40 for line in repeated]


def written(output, tokenizer_dir) -> list[str]:
    bundle = load_tokenizer(tokenizer_dir)
    shards = TokenShards(output, "train")
    tokens, ends = shards[:].tolist(), (shards.document_boundaries() + 1).tolist()
    return [bundle.decode(tokens[start:end - 1]) for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def test_perplexity_filter_removes_planted_garbage_from_real_prose(workspace, base_run, tmp_path):
    junk = garbage()
    mixed = PROSE[:20] + junk[:4] + PROSE[20:] + junk[4:]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in mixed), encoding="utf-8")
    args = ["prep", "--input", tmp_path / "corpus.jsonl", "--tokenizer", workspace / "tok", "--ppl-model", base_run,
            "--ppl-batch-size", 8]
    run_temper(*args, "--output", tmp_path / "kept", "--ppl-keep", "0:80", "--near-dedup", "--workers", 2, check=True)
    kept = written(tmp_path / "kept", workspace / "tok")
    assert len(kept) == round(0.8 * len(mixed)) == 38
    assert set(kept) <= set(PROSE)  # every garbage document is gone
    manifest = json.loads((tmp_path / "kept" / MANIFEST_FILE).read_text())
    stage = manifest["cleaning"]["stages"]["perplexity"]
    assert stage["num_scored"] == 48 and stage["sources"]["corpus"]["documents_removed"] == 10
    assert list(stage["percentiles"]) == ["p0", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p100"]
    assert stage["settings"]["ppl_model_sha256"] == manifest["options"]["ppl_model_sha256"]
    scores = [json.loads(line) for line in (tmp_path / "kept" / "ppl_scores.jsonl").read_text().splitlines()]
    assert [row["document"] for row in scores] == list(range(48))
    worst = sorted(scores, key=lambda row: row["ppl"])[-8:]
    assert {row["document"] for row in worst} == {20, 21, 22, 23, 44, 45, 46, 47}

    report = run_temper(*args, "--output", tmp_path / "all", "--ppl-report-only", check=True)
    assert len(written(tmp_path / "all", workspace / "tok")) == 48
    assert "perplexity" in report.stdout and "p50" in report.stdout
    again = run_temper(*args, "--output", tmp_path / "all", "--ppl-report-only", check=True)
    assert "up to date" in again.stderr


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--ppl-keep", "0:70"], ["prep.ppl_model"]),
    (["--near-dedup", "--near-dedup-bands", "20", "--near-dedup-rows", "8"], ["near_dedup_bands", "minhash_perm"]),
    (["--near-dedup-bands", "20"], ["near_dedup_rows"]),
    (["--ppl-model", "nowhere", "--ppl-keep", "80:10"], ["80:10"]),
    (["--near-dedup-threshold", "1.5"], ["near_dedup_threshold"]),
    (["--dataset-limit", "nosuch=3"], ["nosuch", "sources: prose"]),
    (["--ppl-model", "nowhere"], ["nowhere"]),
])
def test_bad_stage_settings_are_one_line_errors_that_write_nothing(workspace, tmp_path, flags, fragments):
    result = run_temper("prep", "--input", workspace / "corpus" / "prose", "--tokenizer", workspace / "tok",
                        "--output", tmp_path / "out", *flags)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "out").exists()

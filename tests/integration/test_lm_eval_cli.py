"""`temper eval --lm-eval` runs lm-evaluation-harness on a tiny checkpoint, offline, with the shipped local task."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from tests.conftest import assert_user_error, run_temper

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="needs the eval extra: pip install -e '.[eval]' (CI installs it)")
# Any attempt to reach the Hugging Face hub goes to a closed local port and fails at once.
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.slow
def test_lm_eval_runs_the_local_task_and_writes_the_printed_accuracy(base_run, tmp_path):
    output = tmp_path / "results.json"
    result = run_temper("eval", "--checkpoint", base_run, "--lm-eval", "tempering_next_sentence", "--limit", "24",
                        "--batch-size", "8", "--device", "cpu", "--output", output, env=NO_HUB, check=True)
    row = re.search(r"\|tempering_next_sentence\|.*\|acc\s*\|.*?\|\s*([0-9.]+)\|", result.stdout)
    assert row, result.stdout
    report = json.loads(output.read_text())
    accuracy = report["results"]["tempering_next_sentence"]["acc,none"]
    assert float(row.group(1)) == pytest.approx(accuracy, abs=5e-5)  # the table shows 4 decimals
    assert 0.0 <= accuracy <= 1.0
    assert report["n-samples"]["tempering_next_sentence"]["effective"] == 24
    assert report["checkpoint"] == str(base_run / "best") and report["step"] == 12


def test_lm_eval_errors_are_one_line(base_run, tmp_path):
    assert_user_error(run_temper("eval", "--checkpoint", base_run, "--lm-eval", "hellaswag_nope", env=NO_HUB),
                      "unknown lm-eval task 'hellaswag_nope'", "tempering_next_sentence")
    assert_user_error(run_temper("eval", "--checkpoint", base_run, "--lm-eval", "tempering_next_sentence",
                                 "--data", tmp_path), "give --data PATH... (loss and perplexity) or --lm-eval")
    assert_user_error(run_temper("eval", "--checkpoint", base_run, "--lm-eval", "tempering_next_sentence",
                                 "--limit", "0"), "--limit '0'")

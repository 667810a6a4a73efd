"""Word and character error rates: edits over the whole set, as jiwer counts them."""

from __future__ import annotations

import jiwer

from tempering.training.error_rates import error_rates


def test_rates_are_edits_over_the_whole_set_not_a_mean_of_rates():
    references = ["the cat sat", "a dog"]
    hypotheses = ["the bat sat", "a dog barked"]
    rates = error_rates(references, hypotheses)
    assert rates["wer"] == 2 / 5  # one substitution + one insertion over five reference words
    assert rates == {"wer": jiwer.wer(references, hypotheses), "cer": jiwer.cer(references, hypotheses)}


def test_empty_references_are_left_out_and_an_empty_set_scores_zero():
    assert error_rates(["", "ab"], ["x", "ab"]) == {"wer": 0.0, "cer": 0.0}
    assert error_rates([], []) == {"wer": 0.0, "cer": 0.0}

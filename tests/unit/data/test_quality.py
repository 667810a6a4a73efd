"""Quality rules: each planted document breaks exactly the rule it was built for; clean prose passes."""

from __future__ import annotations

import pytest

from tempering.data.quality import (
    RULES,
    QualityThresholds,
    duplicate_ngram_fraction,
    quality_problem,
)

SENTENCE = ("the river carried small boats past quiet villages while farmers watched the clouds gather over "
         "green hills and children counted birds resting on old stone walls near bright orchards where "
         "apples ripened slowly under warm autumn light before travellers arrived with stories about distant "
         "cities busy harbours strange markets and winding roads through forests full of deer foxes owls")
WORDS = SENTENCE.split()
GOOD = " ".join(WORDS) + "."
MORE_WORDS = [word + suffix for suffix in ("", "s", "ed", "ing") for word in WORDS]  # for lines sharing no 5-gram
LIMITS = QualityThresholds()


def lines_of(count: int, words_per_line: int, start: str = "", end: str = "") -> str:
    """`count` distinct lines of prose words."""
    return "\n".join(start + " ".join(MORE_WORDS[i * words_per_line:(i + 1) * words_per_line]) + end
                     for i in range(count))


PLANTED = {
    "too_few_words": "Far too short to be a document.",
    "too_many_words": " ".join(WORDS * 1700),
    "mean_word_length": " ".join(["ab", "cd", "ef"] * 30),
    "symbol_ratio": " ".join(WORDS[:50]) + " " + " ".join(["#tag"] * 8),
    "non_alpha_words": " ".join(WORDS[:45]) + " " + " ".join(str(1000 + i) for i in range(20)),
    "ellipsis_lines": lines_of(12, 16, end="..."),
    "bullet_lines": lines_of(12, 8, start="• "),
    "duplicate_lines": lines_of(7, 10) + "\n" + lines_of(4, 10),
    "duplicate_ngrams": " ".join(WORDS[:50]) + " " + " ".join(WORDS[:12]) + " and again " + " ".join(WORDS[:12]),
}


def test_clean_prose_passes_every_rule():
    assert quality_problem(GOOD, LIMITS) is None


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_removes_its_planted_case(rule):
    assert quality_problem(PLANTED[rule], LIMITS) == rule


def test_thresholds_are_the_limits():
    assert quality_problem(PLANTED["too_few_words"], QualityThresholds(min_words=3)) is None
    assert quality_problem(PLANTED["bullet_lines"], QualityThresholds(max_bullet_lines=1.0)) is None
    assert quality_problem(GOOD, QualityThresholds(max_words=len(WORDS) - 1)) == "too_many_words"


def test_duplicate_ngram_fraction_counts_characters_in_repeated_five_grams():
    words = ["a1", "b2", "c3", "d4", "e5", "x", "a1", "b2", "c3", "d4", "e5"]
    assert duplicate_ngram_fraction(words) == pytest.approx(20 / 21)
    assert duplicate_ngram_fraction(WORDS) == 0.0

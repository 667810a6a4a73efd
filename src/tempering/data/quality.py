"""Quality heuristics in the style of Gopher (Rae et al. 2021, appendix A) and C4: rules that flag junk text.

Each rule compares one statistic of a document with a threshold (`prep.quality_*`). A document
is removed for the first rule it breaks, in the order of RULES, so the per-rule counts add up
to the documents removed. Words are whitespace-separated tokens, lines the non-blank lines.
The rules are a few lines of string handling each: the libraries that carry them (datatrove,
dolma) bring whole pipeline frameworks with them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

BULLETS = ("•", "‣", "◦", "⁃", "·", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
DUPLICATE_NGRAM_WORDS = 5
RULES = ("too_few_words", "too_many_words", "mean_word_length", "symbol_ratio", "non_alpha_words",
         "ellipsis_lines", "bullet_lines", "duplicate_lines", "duplicate_ngrams")


@dataclass(frozen=True)
class QualityThresholds:
    """The limits each rule checks (defaults: Gopher's)."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    max_non_alpha_words: float = 0.2
    max_ellipsis_lines: float = 0.3
    max_bullet_lines: float = 0.9
    max_duplicate_lines: float = 0.3
    max_duplicate_ngrams: float = 0.15


def quality_problem(text: str, limits: QualityThresholds) -> str | None:
    """The first rule of RULES that `text` breaks, or None when it passes them all."""
    words = text.split()
    if len(words) < limits.min_words:
        return "too_few_words"
    if len(words) > limits.max_words:
        return "too_many_words"
    if not words:
        return None
    mean_length = sum(map(len, words)) / len(words)
    if not limits.min_mean_word_length <= mean_length <= limits.max_mean_word_length:
        return "mean_word_length"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / len(words) > limits.max_symbol_ratio:
        return "symbol_ratio"
    non_alpha = sum(1 for word in words if not any(char.isalpha() for char in word))
    if non_alpha / len(words) > limits.max_non_alpha_words:
        return "non_alpha_words"
    return _line_problem(text, limits) or _ngram_problem(words, limits)


def _line_problem(text: str, limits: QualityThresholds) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > limits.max_ellipsis_lines:
        return "ellipsis_lines"
    if sum(line.startswith(BULLETS) for line in lines) / len(lines) > limits.max_bullet_lines:
        return "bullet_lines"
    repeats = len(lines) - len(set(lines))
    if repeats / len(lines) > limits.max_duplicate_lines:
        return "duplicate_lines"
    return None


def duplicate_ngram_fraction(words: list[str], size: int = DUPLICATE_NGRAM_WORDS) -> float:
    """Fraction of the characters of `words` inside word `size`-grams that occur more than once (Gopher)."""
    if len(words) < size:
        return 0.0
    ngrams = [tuple(words[i:i + size]) for i in range(len(words) - size + 1)]
    counts = Counter(ngrams)
    covered = [False] * len(words)
    for start, ngram in enumerate(ngrams):
        if counts[ngram] > 1:
            covered[start:start + size] = [True] * size
    total = sum(map(len, words))
    return sum(len(word) for word, flag in zip(words, covered, strict=True) if flag) / total if total else 0.0


def _ngram_problem(words: list[str], limits: QualityThresholds) -> str | None:
    if duplicate_ngram_fraction(words) > limits.max_duplicate_ngrams:
        return "duplicate_ngrams"
    return None

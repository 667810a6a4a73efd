"""A word bigram language model (interpolated Kneser-Ney) and its shallow fusion into CTC beam search.

`temper transcribe --lm-text FILE...` builds the model from plain text of the domain in a second
or two, normalised like ASR transcripts, and the prefix beam search adds `weight` × ln P(word |
previous word) + `bonus` each time a hypothesis completes a word; a partial word that leaves
the lexicon pays `weight` × ln P(unknown) once, so misspellings fall out of the beam early.
Written here because the maintained options do not fit: KenLM needs a C++ build with Boost,
and pyctcdecode (which could take a custom model) pins numpy below 2.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tempering.data.audio.text import normalize_transcript
from tempering.errors import UserError

START, END = "<s>", "</s>"
DISCOUNT = 0.75  # Kneser-Ney's absolute discount; 0.75 is the usual choice for bigrams
UNKNOWN_SHARE = 1e-3  # of the unigram mass set aside for words the text never had


class WordBigramLM:
    """P(word | previous word) with interpolated Kneser-Ney smoothing over normalised words; a prefix lexicon."""

    def __init__(self, sentences: Iterable[str]):
        bigrams: Counter[tuple[str, str]] = Counter()
        for sentence in sentences:
            words = [START, *sentence.split(), END]
            bigrams.update(zip(words, words[1:], strict=False))
        if not bigrams:
            raise UserError("--lm-text: the text holds no words (after normalising it to the alphabet)")
        self.bigrams = bigrams
        self.history_counts: Counter[str] = Counter()
        self.followers: Counter[str] = Counter()  # distinct words after each history
        preceders: Counter[str] = Counter()  # distinct histories before each word
        for (previous, word), count in bigrams.items():
            self.history_counts[previous] += count
            self.followers[previous] += 1
            preceders[word] += 1
        total = sum(preceders.values())
        vocabulary = len(preceders) + 1
        self.continuation = {w: (1 - UNKNOWN_SHARE) * n / total + UNKNOWN_SHARE / vocabulary
                             for w, n in preceders.items()}
        self.unknown = UNKNOWN_SHARE / vocabulary
        self.prefixes = {word[:i] for word in preceders if word != END for i in range(len(word) + 1)}

    @classmethod
    def from_files(cls, files: Iterable[str | Path], alphabet: str) -> WordBigramLM:
        """The model of the lines of text files (one sentence or paragraph a line), normalised to `alphabet`."""
        sentences = []
        for file in files:
            path = Path(file)
            if not path.is_file():
                raise UserError(f"--lm-text {path}: no such file")
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise UserError(f"--lm-text {path} is not UTF-8 text") from None
            sentences += [s for s in (normalize_transcript(line, alphabet) for line in lines) if s]
        return cls(sentences)

    def log_prob(self, word: str, previous: str) -> float:
        """ln P(word | previous)."""
        lower = self.continuation.get(word, self.unknown)
        seen = self.history_counts.get(previous, 0)
        if not seen:
            return math.log(lower)
        direct = max(self.bigrams.get((previous, word), 0) - DISCOUNT, 0.0) / seen
        return math.log(direct + DISCOUNT * self.followers[previous] / seen * lower)

    @property
    def num_words(self) -> int:
        """Distinct words of the text (the sentence end not counted)."""
        return len(self.continuation) - (END in self.continuation)

    def in_lexicon(self, partial: str) -> bool:
        """Whether some word of the text starts with `partial`."""
        return partial in self.prefixes


class WordFusion:
    """Shallow fusion of a word LM into CTC prefix beam search over character labels."""

    def __init__(self, lm: WordBigramLM, characters: dict[int, str], *, weight: float, bonus: float):
        self.lm, self.characters, self.weight, self.bonus = lm, characters, weight, bonus
        self.unknown_penalty = weight * math.log(lm.unknown)

    def reweighted(self, weight: float, bonus: float) -> WordFusion:
        """The same model and characters with another weight and word bonus."""
        return WordFusion(self.lm, self.characters, weight=weight, bonus=bonus)

    @staticmethod
    def start() -> tuple[str, str]:
        """The state before any label: (previous word, partial word)."""
        return START, ""

    def step(self, state: tuple[str, str], label: int) -> tuple[tuple[str, str], float]:
        """The state after appending `label`, and the score it adds."""
        previous, partial = state
        character = self.characters.get(label, "")
        if character == " ":
            if not partial:
                return state, 0.0
            return (partial, ""), self.weight * self.lm.log_prob(partial, previous) + self.bonus
        extended = partial + character
        left = self.lm.in_lexicon(partial) and not self.lm.in_lexicon(extended)
        return (previous, extended), self.unknown_penalty if left else 0.0

    def finish(self, state: tuple[str, str]) -> float:
        """The score of ending the utterance in `state`: its last word, then the sentence end."""
        previous, partial = state
        score = 0.0
        if partial:
            score += self.weight * self.lm.log_prob(partial, previous) + self.bonus
            previous = partial
        return score + self.weight * self.lm.log_prob(END, previous)

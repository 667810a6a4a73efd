"""The word bigram model (a proper distribution, Kneser-Ney's counts) and its fusion into CTC beam search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tempering.errors import UserError
from tempering.models.audio_encoder.decoding import beam_search_ids
from tempering.models.audio_encoder.word_lm import DISCOUNT, END, START, WordBigramLM, WordFusion

TEXT = ["the cat sat", "the cat ran", "a dog sat", "the dog ran far"]


@pytest.mark.parametrize("history", [START, "the", "cat", "far", "never seen"])
def test_probabilities_of_every_word_and_the_unknown_sum_to_one(history):
    lm = WordBigramLM(TEXT)
    known = [w for w in lm.continuation]
    total = sum(math.exp(lm.log_prob(w, history)) for w in known) + math.exp(lm.log_prob("zebra", history))
    assert total == pytest.approx(1.0, abs=1e-12)


def test_kneser_ney_discounts_seen_bigrams_and_backs_off_to_continuation_counts():
    lm = WordBigramLM(TEXT)
    # "the" is followed by cat (2) and dog (1): 3 tokens, 2 distinct followers
    continuation_cat = lm.continuation["cat"]  # cat follows only "the": 1 distinct history
    expected = (2 - DISCOUNT) / 3 + DISCOUNT * 2 / 3 * continuation_cat
    assert math.exp(lm.log_prob("cat", "the")) == pytest.approx(expected)
    assert lm.log_prob("cat", "the") > lm.log_prob("dog", "the") > lm.log_prob("sat", "the")
    assert lm.in_lexicon("ca") and lm.in_lexicon("") and not lm.in_lexicon("cx")
    assert lm.num_words == 7 and END in lm.continuation


def test_lm_text_files_are_normalised_like_transcripts(tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("The Cat sat.\n\nThe dog, 2 cats!\n", encoding="utf-8")
    lm = WordBigramLM.from_files([text], "abcdefghijklmnopqrstuvwxyz' ")
    assert {"the", "cat", "dog", "two", "cats"} <= set(lm.continuation)
    with pytest.raises(UserError, match="no such file"):
        WordBigramLM.from_files([tmp_path / "missing.txt"], "abc ")


def _spell(text: str, ids: dict[str, int], blank: int, vocab: int, *, doubt: dict[int, tuple[str, float]]) -> np.ndarray:
    """Frames spelling `text` (each character then a blank); at position i in `doubt`, another character
    gets probability p and the written one 1 - p - 0.01."""
    frames = []
    for index, char in enumerate(text):
        row = np.full(vocab, 1e-4)
        if index in doubt:
            other, p = doubt[index]
            row[ids[other]], row[ids[char]] = p, 1 - p - 0.01
        else:
            row[ids[char]] = 0.98
        frames.append(row / row.sum())
        blank_row = np.full(vocab, 1e-4)
        blank_row[blank] = 0.98
        frames.append(blank_row / blank_row.sum())
    return np.log(np.array(frames))


def test_fusion_turns_an_acoustically_likelier_misspelling_into_the_known_word():
    alphabet = " abcdefghijklmnopqrstuvwxyz"
    ids = {c: i + 1 for i, c in enumerate(alphabet)}
    blank, vocab = 0, len(alphabet) + 1
    # The acoustics say "the kat" (k at 0.55 against c at 0.44); the text only knows "cat".
    log_probs = _spell("the cat", ids, blank, vocab, doubt={4: ("k", 0.55)})
    decode = {i: c for c, i in ids.items()}
    plain = "".join(decode[i] for i in beam_search_ids(log_probs, blank, beam=8))
    assert plain == "the kat"
    fusion = WordFusion(WordBigramLM(TEXT), decode, weight=0.5, bonus=1.0)
    fused = "".join(decode[i] for i in beam_search_ids(log_probs, blank, beam=8, fusion=fusion))
    assert fused == "the cat"
    silent = fusion.reweighted(0.0, 0.0)  # no weight, no bonus: the plain search's answer
    assert beam_search_ids(log_probs, blank, beam=8, fusion=silent) == beam_search_ids(log_probs, blank, beam=8)

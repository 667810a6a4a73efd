"""CTC decoding: best path (greedy) and prefix beam search over per-frame log-probabilities.

Greedy decoding takes the most likely class per frame, merges repeats and drops blanks.
The prefix beam search (Hannun et al. 2014) keeps the `beam` most likely label prefixes, summing
the probability of every alignment that spells each one, optionally ranked with a word language
model's score added (shallow fusion, `word_lm.WordFusion`); it is written here because the
maintained CTC decoders need torchaudio or KenLM builds.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tempering.models.audio_encoder.word_lm import WordFusion


def greedy_ids(frame_ids: np.ndarray, length: int, blank_id: int) -> list[int]:
    """Labels of a best path: the argmax class of the first `length` frames, repeats merged, blanks removed."""
    path = np.asarray(frame_ids[:length])
    if len(path) == 0:
        return []
    keep = np.ones(len(path), bool)
    keep[1:] = path[1:] != path[:-1]
    return [int(i) for i in path[keep] if i != blank_id]


def beam_search_ids(log_probs: np.ndarray, blank_id: int, beam: int, prune: float = -12.0,
                    fusion: WordFusion | None = None) -> list[int]:
    """Labels of the most likely prefix after a CTC prefix beam search over (T, V) log-probabilities.

    Classes whose log-probability in a frame is below `prune` are not tried as extensions there.
    With `fusion`, prefixes are ranked by their CTC score plus the word model's.
    """
    # prefix -> (log p ending in blank, log p ending in a label)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    words = {(): (WordFusion.start(), 0.0)}  # prefix -> (fusion state, fusion score so far)

    def rank(item: tuple[tuple[int, ...], list[float]]) -> float:
        return _logaddexp(*item[1]) + (words[item[0]][1] if fusion is not None else 0.0)

    for frame in np.asarray(log_probs, np.float64):
        candidates = [int(c) for c in np.flatnonzero(frame >= prune)] or [int(frame.argmax())]
        frame = frame.tolist()
        following: dict[tuple[int, ...], list[float]] = {}
        add = functools.partial(_add_score, following)
        for prefix, (p_blank, p_label) in beams.items():
            total = _logaddexp(p_blank, p_label)
            for c in candidates:
                p = frame[c]
                if c == blank_id:
                    add(prefix, total + p, -math.inf)
                    continue
                if prefix and prefix[-1] == c:
                    add(prefix, -math.inf, p_label + p)  # the same label continues
                    extended_score = p_blank + p  # a repeat needs a blank in between
                else:
                    extended_score = total + p
                extended = prefix + (c,)
                add(extended, -math.inf, extended_score)
                if fusion is not None and extended not in words:
                    state, score = words[prefix]
                    state, added = fusion.step(state, c)
                    words[extended] = (state, score + added)

        beams = {prefix: (scores[0], scores[1]) for prefix, scores in sorted(following.items(), key=rank,
                                                                             reverse=True)[:beam]}
    if fusion is None:
        return list(max(beams.items(), key=rank)[0])
    return list(max(beams.items(), key=lambda item: rank(item) + fusion.finish(words[item[0]][0]))[0])


def _logaddexp(a: float, b: float) -> float:
    """ln(e^a + e^b) of two Python floats (numpy's ufunc costs microseconds per scalar call)."""
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def _add_score(beams: dict, prefix: tuple[int, ...], blank_score: float, label_score: float) -> None:
    entry = beams.setdefault(prefix, [-math.inf, -math.inf])
    entry[0] = _logaddexp(entry[0], blank_score)
    entry[1] = _logaddexp(entry[1], label_score)

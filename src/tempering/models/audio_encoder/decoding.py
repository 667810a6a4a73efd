"""CTC decoding: best path (greedy) and prefix beam search over per-frame log-probabilities.

Greedy decoding takes the most likely class per frame, merges repeats and drops blanks.
The prefix beam search (Hannun et al. 2014, without a language model) keeps the `beam` most
likely label prefixes, summing the probability of every alignment that spells each one; it is
written here because the maintained CTC decoders need torchaudio or KenLM builds.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def greedy_ids(frame_ids: np.ndarray, length: int, blank_id: int) -> list[int]:
    """Labels of a best path: the argmax class of the first `length` frames, repeats merged, blanks removed."""
    path = np.asarray(frame_ids[:length])
    if len(path) == 0:
        return []
    keep = np.ones(len(path), bool)
    keep[1:] = path[1:] != path[:-1]
    return [int(i) for i in path[keep] if i != blank_id]


def beam_search_ids(log_probs: np.ndarray, blank_id: int, beam: int, prune: float = -12.0) -> list[int]:
    """Labels of the most likely prefix after a CTC prefix beam search over (T, V) log-probabilities.

    Classes whose log-probability in a frame is below `prune` are not tried as extensions there.
    """
    # prefix -> (log p ending in blank, log p ending in a label)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in np.asarray(log_probs, np.float64):
        candidates = [int(c) for c in np.flatnonzero(frame >= prune)] or [int(frame.argmax())]
        following: dict[tuple[int, ...], list[float]] = {}
        add = functools.partial(_add_score, following)
        for prefix, (p_blank, p_label) in beams.items():
            total = np.logaddexp(p_blank, p_label)
            for c in candidates:
                p = frame[c]
                if c == blank_id:
                    add(prefix, total + p, -math.inf)
                elif prefix and prefix[-1] == c:
                    add(prefix + (c,), -math.inf, p_blank + p)  # a repeat needs a blank in between
                    add(prefix, -math.inf, p_label + p)  # or it continues the same label
                else:
                    add(prefix + (c,), -math.inf, total + p)
        ranked = sorted(following.items(), key=lambda item: -np.logaddexp(*item[1]))[:beam]
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked}
    return list(max(beams.items(), key=lambda item: np.logaddexp(*item[1]))[0])


def _add_score(beams: dict, prefix: tuple[int, ...], blank_score: float, label_score: float) -> None:
    entry = beams.setdefault(prefix, [-math.inf, -math.inf])
    entry[0] = np.logaddexp(entry[0], blank_score)
    entry[1] = np.logaddexp(entry[1], label_score)

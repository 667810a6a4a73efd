"""CTC forced alignment (Viterbi): which frames of an utterance spell which character of its transcript.

The most likely single CTC path that spells exactly the target, found by dynamic programming
over the target interleaved with blanks (2S + 1 states: a state may stay, step to the next,
or skip a blank between two different labels). Used to give each input character of the
Talker a duration. Written here because torchaudio's `forced_align` would bring torchaudio.
"""

from __future__ import annotations

import numpy as np


def forced_alignment(log_probs: np.ndarray, target: np.ndarray, blank_id: int) -> np.ndarray:
    """(T,) index of the target character each frame belongs to; a blank frame belongs to the character before it.

    Frames before the first character belong to it. Raises ValueError when T frames cannot spell the target.
    """
    frames, length = len(log_probs), len(target)
    states = np.full(2 * length + 1, blank_id, np.int64)
    states[1::2] = target
    score = np.full((frames, len(states)), -np.inf)
    back = np.zeros((frames, len(states)), np.int64)
    score[0, 0] = log_probs[0, blank_id]
    if length:
        score[0, 1] = log_probs[0, states[1]]
    skip = np.zeros(len(states), bool)
    skip[3::2] = states[3::2] != states[1:-2:2]  # label -> next different label, over the blank between
    for t in range(1, frames):
        stay, step = score[t - 1], np.concatenate([[-np.inf], score[t - 1, :-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[t - 1, :-2]]), -np.inf)
        choices = np.stack([stay, step, jump])  # (3, states)
        back[t] = choices.argmax(0)
        score[t] = choices.max(0) + log_probs[t, states]
    end = len(states) - 1 if score[-1, -1] >= score[-1, -2] or length == 0 else len(states) - 2
    if not np.isfinite(score[-1, end]):
        raise ValueError(f"{frames} frames cannot spell {length} characters")
    path = np.empty(frames, np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = end
        end -= back[t, end]
    return np.maximum((path - 1) // 2, 0)


def durations_from_alignment(owner: np.ndarray, num_characters: int) -> np.ndarray:
    """(S,) frames each character owns, from `forced_alignment`'s per-frame owner."""
    return np.bincount(owner, minlength=num_characters)[:num_characters]

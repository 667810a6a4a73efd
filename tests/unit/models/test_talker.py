"""The talker family and the CTC forced alignment that gives its durations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempering.models.audio_encoder.alignment import durations_from_alignment, forced_alignment
from tempering.models.talker import TALKER


def test_declared_tensors_match_and_frames_follow_the_durations():
    arch = TALKER.architecture("talker_tiny", {})
    torch.manual_seed(0)
    model = TALKER.build(arch).eval()
    assert {k: tuple(v.shape) for k, v in model.export_state_dict().items()} == TALKER.expected_tensors(arch)
    tokens, lengths = torch.tensor([[5, 6, 7], [8, 9, 2]]), torch.tensor([3, 2])
    mels, log_durations, frames = model(tokens, lengths, torch.tensor([[3, 2, 4], [1, 5, 9]]))
    assert mels.shape == (2, 9, 80) and log_durations.shape == (2, 3) and frames.tolist() == [9, 6]
    with torch.no_grad():
        alone, _, _ = model(tokens[1:, :2], lengths[1:], torch.tensor([[1, 5]]))
    torch.testing.assert_close(mels[1, :6].detach(), alone[0], atol=1e-5, rtol=1e-5)  # padding does not leak
    spoken, _, predicted = model(tokens, lengths)  # predicted durations: at least one frame per character
    assert (predicted >= lengths).all() and spoken.shape[1] == int(predicted.max())


def _peaky(path: list[int], classes: int = 4) -> np.ndarray:
    log_probs = np.full((len(path), classes), -10.0)
    log_probs[np.arange(len(path)), path] = 0.0
    return log_probs


def test_forced_alignment_gives_each_character_its_frames_blanks_to_the_one_before():
    owner = forced_alignment(_peaky([0, 1, 1, 0, 2, 2, 0]), np.array([1, 2]), blank_id=0)
    assert owner.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert durations_from_alignment(owner, 2).tolist() == [4, 3]


def test_forced_alignment_separates_repeats_and_follows_the_target_not_the_argmax():
    assert forced_alignment(_peaky([1, 0, 1]), np.array([1, 1]), 0).tolist() == [0, 0, 1]
    owner = forced_alignment(_peaky([3, 3, 3, 3]), np.array([1, 2]), 0)  # the frames say 3; the target rules
    assert sorted(set(owner.tolist())) == [0, 1]


def test_too_few_frames_cannot_be_aligned():
    with pytest.raises(ValueError, match="cannot spell"):
        forced_alignment(_peaky([1, 1]), np.array([1, 1]), 0)  # a repeat needs a blank between: 3 frames

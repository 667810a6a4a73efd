"""The ctc objective: per-target-token loss, impossible alignments skipped (no NaN), greedy and beam decoding."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tempering.models.audio_encoder.decoding import beam_search_ids, greedy_ids
from tempering.training.ctc import Ctc, TranscriptScores, alignment_possible, required_frames

BLANK = 0


class FixedLogits(nn.Module):
    """A stand-in model that returns given logits and lengths."""

    def __init__(self, logits: torch.Tensor, lengths: torch.Tensor):
        super().__init__()
        self.logits, self.lengths = nn.Parameter(logits), lengths

    def forward(self, features, feature_lengths):
        return self.logits, self.lengths


def _batch(targets: list[list[int]]) -> dict:
    width = max(len(t) for t in targets)
    padded = torch.tensor([t + [0] * (width - len(t)) for t in targets])
    return {"features": torch.zeros(len(targets), 1, 80), "feature_lengths": torch.ones(len(targets)),
            "targets": padded, "target_lengths": torch.tensor([len(t) for t in targets])}


def test_loss_is_summed_ctc_over_feasible_utterances_and_units_are_their_targets():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 6, 2])  # the third has 2 frames for 3 targets: impossible
    batch = _batch([[1, 2], [3, 3, 4], [1, 2, 3]])
    result = Ctc(BLANK, str)(FixedLogits(logits, lengths), batch)
    expected = sum(F.ctc_loss(logits[i:i + 1].log_softmax(-1).transpose(0, 1), batch["targets"][i:i + 1],
                              lengths[i:i + 1], batch["target_lengths"][i:i + 1], blank=BLANK, reduction="sum")
                   for i in (0, 1))
    assert int(result.num_units) == 5
    torch.testing.assert_close(result.loss_sum, expected)


def test_an_impossible_alignment_gives_a_finite_loss_and_gradient():
    model = FixedLogits(torch.randn(1, 2, 5), torch.tensor([2]))
    result = Ctc(BLANK, str)(model, _batch([[1, 1, 2]]))  # needs 4 frames (a blank between the repeats)
    result.loss_sum.backward()
    assert math.isfinite(float(result.loss_sum.detach())) and int(result.num_units) == 0
    assert torch.isfinite(model.logits.grad).all()


def test_required_frames_count_repeats_and_host_side_feasibility_agrees():
    targets, lengths = torch.tensor([[1, 1, 2, 0], [3, 4, 4, 4]]), torch.tensor([3, 4])
    assert required_frames(targets, lengths).tolist() == [4, 6]
    assert not alignment_possible(10, np.array([1, 2, 3]))  # 10 mel frames make 1 encoder frame
    assert alignment_possible(40, np.array([1, 2, 3]))
    assert not alignment_possible(400, np.array([], np.int64))


def test_greedy_merges_repeats_and_drops_blanks():
    assert greedy_ids(np.array([0, 1, 1, 0, 1, 2, 2, 0]), 8, BLANK) == [1, 1, 2]
    assert greedy_ids(np.array([1, 2, 3]), 2, BLANK) == [1, 2]


def test_beam_search_sums_alignments_where_best_path_does_not():
    # Each frame: blank 0.6, label 0.4. Best path is blank-blank (""), but "1" has probability 0.64.
    log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_ids(log_probs.argmax(-1), 2, BLANK) == []
    assert beam_search_ids(log_probs, BLANK, beam=4) == [1]


def test_beam_search_agrees_with_greedy_on_confident_frames():
    rng = np.random.default_rng(0)
    path = rng.integers(0, 6, 40)
    log_probs = np.full((40, 6), -20.0)
    log_probs[np.arange(40), path] = 0.0
    assert beam_search_ids(log_probs, BLANK, beam=3) == greedy_ids(path, 40, BLANK)


def test_split_scores_equal_jiwer_over_the_whole_split():
    jiwer = __import__("jiwer")
    alphabet = " abcdefgh"
    scores = TranscriptScores(BLANK, lambda ids: "".join(alphabet[i] for i in ids))
    references = ["abc def", "gh a", "bad"]
    hypotheses = [[1, 2, 3, 0, 4, 5, 6], [7, 8, 0, 2], [2, 1, 4, 4]]  # frame ids (0 = blank)
    for ref, frames in zip(references, hypotheses, strict=True):
        points = torch.tensor([[ord(c) for c in ref]])
        scores.update({"reference": points}, (torch.tensor([frames]), torch.tensor([len(frames)])))
    texts = ["abcdef", "ghb", "bad"]  # greedy: blanks dropped, the repeated 4 merged
    result = scores.compute()
    assert result == {"wer": jiwer.wer(references, texts), "cer": jiwer.cer(references, texts)}

"""The `ctc` objective (speech recognition): CTC loss per target token; word and character error rates at validation.

The loss of an utterance is -log p(transcript | audio) summed over every alignment (PyTorch's
`ctc_loss`), summed over the batch; the unit is the target token (a character, or a piece
when the model spells with a tokenizer), so the loss is nats per target character, comparable
between batches of different lengths. An alignment is impossible when the encoder makes fewer
frames than the transcript needs (its length plus one blank between each repeated pair): the
data side drops such utterances and counts them, and this objective also leaves any that
reach it out of the loss and the units (`zero_infinity` on top), so one never becomes a NaN.
Validation decodes greedily and scores with `jiwer` over the whole split (`wer`, `cer`);
`best/` and early stopping follow the WER, lowest first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tempering.data.audio.batches import texts_from_code_points
from tempering.models.audio_encoder.architecture import subsampled_length
from tempering.models.audio_encoder.decoding import greedy_ids
from tempering.training.error_rates import error_rates
from tempering.training.objective import BestMetric, LossResult, NumpyBatch, Objective, TensorBatch


def required_frames(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """(B,) frames CTC needs for each padded (B, S) target: its length plus its adjacent repeats."""
    repeats = targets[:, 1:] == targets[:, :-1]
    real = torch.arange(targets.shape[1] - 1, device=targets.device)[None, :] < (target_lengths[:, None] - 1)
    return target_lengths + (repeats & real).sum(1)


def alignment_possible(num_frames: int, target: np.ndarray) -> bool:
    """Whether an utterance of `num_frames` mel frames can align to `target` ids (host side, before batching)."""
    needed = len(target) + int(np.sum(target[1:] == target[:-1])) if len(target) else 0
    return len(target) > 0 and subsampled_length(num_frames) >= needed


class Ctc(Objective):
    """CTC loss of an audio encoder's per-frame logits; greedy-decoded WER and CER over the validation split."""

    name = "ctc"
    unit = "targets"
    perplexity = False
    best_metric = BestMetric("wer", "min")

    def __init__(self, blank_id: int, decode: Callable[[list[int]], str]):
        self.blank_id = blank_id
        self.decode = decode

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed CTC loss over the batch's feasible utterances and their target tokens."""
        return self.predict(model, batch)[0]

    def predict(self, model: nn.Module, batch: TensorBatch) -> tuple[LossResult, tuple[torch.Tensor, torch.Tensor]]:
        """The LossResult and ((B, T') best class per frame, (B,) frames)."""
        logits, lengths = model(batch["features"], batch["feature_lengths"])  # (B, T', V), (B,)
        log_probs = logits.float().log_softmax(-1)
        targets, target_lengths = batch["targets"], batch["target_lengths"]
        feasible = (lengths >= required_frames(targets, target_lengths)) & (target_lengths > 0)
        losses = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=self.blank_id,
                            reduction="none", zero_infinity=True)  # (B,)
        loss_sum = torch.where(feasible, losses, torch.zeros_like(losses)).sum()
        units = (target_lengths * feasible).sum()
        return LossResult(loss_sum, units), (logits.argmax(-1), lengths)

    def count_units(self, batch: NumpyBatch) -> int:
        """Target tokens of the utterances whose alignment is possible."""
        frames = batch["feature_lengths"]
        return sum(int(n) for n, f, target in zip(batch["target_lengths"], frames, batch["targets"], strict=True)
                   if alignment_possible(int(f), target[:int(n)]))

    def split_metric(self) -> TranscriptScores:
        """A fresh WER/CER accumulator for one validation split."""
        return TranscriptScores(self.blank_id, self.decode)


class TranscriptScores:
    """Greedy transcripts and references of a validation split, scored by jiwer."""

    def __init__(self, blank_id: int, decode: Callable[[list[int]], str]):
        self.blank_id, self.decode = blank_id, decode
        self.references: list[str] = []
        self.hypotheses: list[str] = []

    def update(self, batch: TensorBatch, predictions: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Decode one batch's best paths and keep them with the batch's reference transcripts."""
        frame_ids, lengths = (t.cpu().numpy() for t in predictions)
        self.hypotheses += [self.decode(greedy_ids(ids, int(n), self.blank_id)) for ids, n in zip(frame_ids, lengths,
                                                                                                    strict=True)]
        self.references += texts_from_code_points(batch["reference"].cpu())

    def compute(self) -> dict[str, float]:
        """wer and cer over every utterance taken in."""
        return error_rates(self.references, self.hypotheses)

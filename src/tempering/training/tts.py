"""The `tts` objective (the Talker): L1 on log-mel frames plus the log-duration error of each character.

Loss of a batch: the mean absolute log-mel error of each real frame (over its 80 bins), summed
over frames, plus the squared error of the predicted log(1 + duration) of each real character,
summed over characters; the unit is the mel frame, so the loss is per frame. The frames are
made with the true durations (teacher forcing), so predicted and target frames line up.
Validation also reports `mel_l1` and `duration_loss` (per frame) and, when an ASR checkpoint
is given, the intelligibility (`intelligibility_cer`, `intelligibility_wer`): the Talker speaks
each validation sentence with its own predicted durations, Griffin-Lim makes audio, the ASR
transcribes it. `best/` follows the validation loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempering.models.sequence_encoder import padding_mask
from tempering.training.objective import (
    BestMetric,
    LossResult,
    NumpyBatch,
    Objective,
    SplitMetric,
    TensorBatch,
)


class Tts(Objective):
    """Log-mel L1 + log-duration MSE per mel frame; optional intelligibility at validation."""

    name = "tts"
    unit = "frames"
    perplexity = False
    best_metric = BestMetric("loss", "min")

    def __init__(self, intelligibility: Callable[[], SplitMetric] | None = None):
        self.intelligibility = intelligibility

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed frame and duration losses of the batch, with the true durations."""
        tokens, token_lengths, durations = batch["tokens"], batch["token_lengths"], batch["durations"]
        mels, log_durations, _ = model(tokens, token_lengths, durations)  # (B, T, 80), (B, N)
        frame_mask = padding_mask(batch["mel_lengths"], mels.shape[1])
        mel_l1 = ((mels.float() - batch["mels"]).abs().mean(-1) * frame_mask).sum()
        token_mask = padding_mask(token_lengths, tokens.shape[1])
        duration_loss = (((log_durations.float() - torch.log1p(durations.float())) ** 2) * token_mask).sum()
        return LossResult(mel_l1 + duration_loss, frame_mask.sum(),
                          {"mel_l1": mel_l1.detach(), "duration_loss": duration_loss.detach()})

    def count_units(self, batch: NumpyBatch) -> int:
        """Real mel frames of the batch."""
        return int(batch["mel_lengths"].sum())

    def split_metric(self) -> SplitMetric | None:
        """A fresh intelligibility accumulator, when an ASR checkpoint was given."""
        return self.intelligibility() if self.intelligibility else None

    def predict(self, model: nn.Module, batch: TensorBatch) -> tuple[LossResult, tuple[torch.Tensor, torch.Tensor]]:
        """The LossResult, and the log-mel the Talker speaks with its own durations ((B, T, 80), (B,) frames)."""
        spoken, _, lengths = model(batch["tokens"], batch["token_lengths"])
        return self(model, batch), (spoken, lengths)

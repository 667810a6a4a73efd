"""Intelligibility of a Talker: our ASR's character error rate on the Talker's synthesised validation speech."""

from __future__ import annotations

import torch

from tempering.checkpoint.model_loading import LoadedModel
from tempering.data.audio.batches import texts_from_code_points
from tempering.data.audio.vocoder import griffin_lim
from tempering.generation.transcribe import decode_logits, frame_logits
from tempering.training.error_rates import error_rates


class Intelligibility:
    """Vocode each spoken validation sentence (Griffin-Lim), transcribe it with the ASR, score CER and WER."""

    def __init__(self, asr: LoadedModel):
        self.asr = asr
        self.references: list[str] = []
        self.hypotheses: list[str] = []

    @torch.no_grad()
    def update(self, batch: dict, predictions: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Transcribe what the Talker said for each sentence of the batch (greedy, the batch through the ASR at once)."""
        mels, lengths = predictions
        spoken = [griffin_lim(mels[row, :length].float()) for row, length in enumerate(lengths.tolist())]
        self.hypotheses += [decode_logits(self.asr, logits) for logits in frame_logits(self.asr, spoken)]
        self.references += texts_from_code_points(batch["reference"].cpu())

    def compute(self) -> dict[str, float]:
        """intelligibility_cer and intelligibility_wer over every sentence taken in."""
        rates = error_rates(self.references, self.hypotheses)
        return {"intelligibility_cer": rates["cer"], "intelligibility_wer": rates["wer"]}

"""Intelligibility of a Talker: our ASR's character error rate on the Talker's synthesised validation speech."""

from __future__ import annotations

import numpy as np
import torch

from tempering.checkpoint.model_loading import LoadedModel
from tempering.data.audio.batches import texts_from_code_points
from tempering.data.audio.features import log_mel, normalize_utterance
from tempering.data.audio.vocoder import griffin_lim
from tempering.models.audio_encoder.decoding import greedy_ids
from tempering.training.error_rates import error_rates


class Intelligibility:
    """Vocode each spoken validation sentence (Griffin-Lim), transcribe it with the ASR, score CER and WER."""

    def __init__(self, asr: LoadedModel):
        self.asr = asr
        self.references: list[str] = []
        self.hypotheses: list[str] = []

    @torch.no_grad()
    def update(self, batch: dict, predictions: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Transcribe what the Talker said for each sentence of the batch."""
        mels, lengths = predictions
        for row, length in enumerate(lengths.tolist()):
            self.hypotheses.append(self.transcribe(griffin_lim(mels[row, :length].float())))
        self.references += texts_from_code_points(batch["reference"].cpu())

    def transcribe(self, samples: np.ndarray) -> str:
        """The ASR's greedy transcript of 16 kHz samples."""
        features = torch.from_numpy(normalize_utterance(log_mel(samples).numpy()))[None]
        logits, lengths = self.asr.model(features, torch.tensor([features.shape[1]]))
        ids = greedy_ids(logits[0].argmax(-1).numpy(), int(lengths[0]), self.asr.arch.blank_id)
        return self.asr.tokenizer.decode(ids, skip_special_tokens=True)

    def compute(self) -> dict[str, float]:
        """intelligibility_cer and intelligibility_wer over every sentence taken in."""
        rates = error_rates(self.references, self.hypotheses)
        return {"intelligibility_cer": rates["cer"], "intelligibility_wer": rates["wer"]}

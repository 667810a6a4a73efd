"""Durations of the Talker's characters from an ASR checkpoint: CTC forced alignment of each utterance."""

from __future__ import annotations

import numpy as np
import torch

from tempering.checkpoint.model_loading import LoadedModel
from tempering.models.audio_encoder.alignment import durations_from_alignment, forced_alignment
from tempering.models.audio_encoder.architecture import SUBSAMPLING_FACTOR


def asr_aligner(asr: LoadedModel):
    """A function (normalised log-mel (T, 80), character ids (S,)) -> (S,) mel frames per character, or None."""

    @torch.no_grad()
    def align(features: np.ndarray, target: np.ndarray) -> np.ndarray | None:
        logits, lengths = asr.model(torch.from_numpy(features)[None], torch.tensor([len(features)]))
        log_probs = logits[0, :int(lengths[0])].float().log_softmax(-1).numpy()
        try:
            owner = forced_alignment(log_probs, target, asr.arch.blank_id)
        except ValueError:  # too few frames for the transcript
            return None
        frames = durations_from_alignment(owner, len(target)) * SUBSAMPLING_FACTOR
        frames[-1] += len(features) - frames.sum()  # the subsampling's leftover frames go to the last character
        return frames if frames[-1] > 0 else None

    return align

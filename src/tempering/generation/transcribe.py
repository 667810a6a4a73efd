"""`temper transcribe`: audio files in, transcripts out, with an ASR (audio_encoder) checkpoint.

Files are read and turned into normalised log-mel features like the training data, sorted by
length and run through the model a batch at a time (less padding); each utterance is decoded
greedily (best path) or with a CTC prefix beam search (`--beam N`), which can add a word bigram
language model built from text of the domain (`--lm-text FILE`, repeatable; `word_lm.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from tempering.checkpoint.model_loading import LoadedModel, load_model
from tempering.data.audio.batches import pad_frames
from tempering.data.audio.features import log_mel, normalize_utterance
from tempering.data.audio.io import SAMPLE_RATE, read_audio
from tempering.errors import UserError
from tempering.models.audio_encoder.decoding import beam_search_ids, greedy_ids
from tempering.models.audio_encoder.word_lm import WordBigramLM, WordFusion
from tempering.tokenizer.characters import character_set

BATCH_SIZE = 16


@dataclass
class Transcripts:
    """Each file's transcript, and the audio and compute seconds behind them (their ratio is the real-time factor)."""

    texts: list[str]
    audio_s: float
    compute_s: float

    @property
    def real_time_factor(self) -> float:
        """Seconds of compute per second of audio (below 1 is faster than real time)."""
        return self.compute_s / max(self.audio_s, 1e-9)


def load_asr_model(path: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load an audio_encoder checkpoint (or run dir); UserError when it holds another model type."""
    loaded = load_model(path, device=device)
    if loaded.family.name != "audio_encoder":
        raise UserError(f"{loaded.checkpoint.path} holds a {loaded.family.name} model; transcribe needs a speech "
                        "recognition (audio_encoder) checkpoint")
    return loaded


def word_fusion(loaded: LoadedModel, lm_text: list[str], *, weight: float, bonus: float) -> WordFusion:
    """Shallow fusion of a word bigram model of `lm_text` files into the checkpoint's character beam search."""
    alphabet = character_set(loaded.tokenizer)
    if " " not in alphabet:
        raise UserError(f"{loaded.checkpoint.path} does not spell characters with a space between words; "
                        "--lm-text needs a character (speech.alphabet) model")
    lm = WordBigramLM.from_files(lm_text, alphabet)
    characters = {loaded.tokenizer.encode(c)[0]: c for c in alphabet}
    return WordFusion(lm, characters, weight=weight, bonus=bonus)


@torch.no_grad()
def frame_logits(loaded: LoadedModel, samples: list[np.ndarray]) -> list[torch.Tensor]:
    """Each utterance's (frames, classes) CTC logits, run a batch of similar lengths at a time."""
    features = [normalize_utterance(log_mel(s).numpy()) for s in samples]
    order = np.argsort([len(f) for f in features], kind="stable")
    logits_of: list[torch.Tensor] = [torch.empty(0)] * len(samples)
    device = next(loaded.model.parameters()).device
    for start in range(0, len(order), BATCH_SIZE):
        chosen = order[start:start + BATCH_SIZE]
        padded, lengths = pad_frames([features[i] for i in chosen])
        logits, out_lengths = loaded.model(torch.from_numpy(padded).to(device), torch.from_numpy(lengths).to(device))
        for row, index in enumerate(chosen):
            logits_of[index] = logits[row, :int(out_lengths[row])]
    return logits_of


@torch.no_grad()
def transcribe_files(loaded: LoadedModel, files: list[str], *, beam: int | None = None,
                     fusion: WordFusion | None = None) -> Transcripts:
    """Transcripts of audio files in the order given; the clock runs from reading the audio to decoding."""
    started = time.perf_counter()
    samples = [read_audio(f) for f in files]
    texts = [decode_logits(loaded, logits, beam=beam, fusion=fusion) for logits in frame_logits(loaded, samples)]
    audio_s = sum(len(s) for s in samples) / SAMPLE_RATE
    return Transcripts(texts, audio_s, time.perf_counter() - started)


def decode_logits(loaded: LoadedModel, logits: torch.Tensor, *, beam: int | None = None,
                  fusion: WordFusion | None = None) -> str:
    """The text of one utterance's (frames, classes) CTC logits: greedy, or a prefix beam search of width `beam`."""
    blank = loaded.arch.blank_id
    if beam:
        ids = beam_search_ids(logits.float().log_softmax(-1).cpu().numpy(), blank, beam, fusion=fusion)
    else:
        ids = greedy_ids(logits.argmax(-1).cpu().numpy(), len(logits), blank)
    return loaded.tokenizer.decode(ids, skip_special_tokens=True)

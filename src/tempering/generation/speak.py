"""`temper generate --checkpoint TALKER --speak TEXT --output out.wav`: text to a 16 kHz WAV anyone can play.

The text is normalised to the Talker's characters like its training transcripts, the Talker
predicts durations and log-mel frames in one pass, and Griffin-Lim (`data/audio/vocoder.py`)
turns them into audio.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tempering.checkpoint.model_loading import LoadedModel, load_model
from tempering.data.audio.io import SAMPLE_RATE, write_wav
from tempering.data.audio.text import normalize_transcript
from tempering.data.audio.vocoder import griffin_lim
from tempering.errors import UserError
from tempering.tokenizer.characters import character_set


def load_talker(path: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a talker checkpoint (or run dir); UserError when it holds another model type."""
    loaded = load_model(path, device=device)
    if loaded.family.name != "talker":
        raise UserError(f"{loaded.checkpoint.path} holds a {loaded.family.name} model; --speak needs a Talker "
                        "(talker) checkpoint")
    return loaded


@torch.no_grad()
def speak(loaded: LoadedModel, text: str) -> tuple:
    """(16 kHz float32 samples, the normalised text spoken) for `text`."""
    spoken = normalize_transcript(text, character_set(loaded.tokenizer))
    if not spoken:
        raise UserError(f"--speak {text!r} has no character the Talker can say")
    device = next(loaded.model.parameters()).device
    tokens = torch.tensor([loaded.tokenizer.encode(spoken)], device=device)
    mels, _, lengths = loaded.model(tokens, torch.tensor([tokens.shape[1]], device=device))
    return griffin_lim(mels[0, :int(lengths[0])].float()), spoken


def speak_to_file(path: str, text: str, output: Path, device: str | torch.device = "cpu") -> dict:
    """Synthesise `text` with the Talker at `path` into a WAV at `output`; return seconds of audio and compute."""
    loaded = load_talker(path, device)
    started = time.perf_counter()
    samples, spoken = speak(loaded, text)
    compute_s = time.perf_counter() - started
    write_wav(output, samples)
    return {"text": spoken, "audio_s": len(samples) / SAMPLE_RATE, "compute_s": compute_s}

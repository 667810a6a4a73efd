"""Mel frames back to audio with Griffin-Lim (`torch.stft` / `torch.istft`): no downloaded vocoder.

The log-mel power is turned back into a linear magnitude spectrogram with the pseudo-inverse
of the mel filterbank (negative values clipped), sharpened by a power above 1 (it lowers the
buzz Griffin-Lim leaves between harmonics), and given a phase by the "fast" Griffin-Lim
iteration (Perraudin et al. 2013: each new phase estimate is pushed past the previous one by
a momentum term). The starting phase comes from a fixed seed, so synthesis is deterministic.
Written here because it is fifteen lines over torch's own STFT and torchaudio is not a dependency.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tempering.data.audio.features import HOP_LENGTH, N_FFT, WIN_LENGTH, _window, mel_filterbank

GRIFFIN_LIM_ITERATIONS = 32
MOMENTUM = 0.99
SHARPEN = 1.3  # magnitude ** SHARPEN before phase recovery


@functools.cache
def _inverse_filterbank() -> torch.Tensor:
    return torch.linalg.pinv(mel_filterbank())  # (F, 80)


def mel_to_magnitude(log_mel: torch.Tensor) -> torch.Tensor:
    """(frames, 80) log-mel power → (F, frames) linear magnitude estimate."""
    power = _inverse_filterbank() @ log_mel.float().exp().T  # (F, frames)
    return power.clamp_min(0.0).sqrt()


def griffin_lim(log_mel: torch.Tensor, *, iterations: int = GRIFFIN_LIM_ITERATIONS, seed: int = 0) -> np.ndarray:
    """16 kHz float32 samples whose log-mel power approximates `log_mel` (frames, 80)."""
    with torch.no_grad():
        magnitude = mel_to_magnitude(log_mel.detach().cpu()) ** SHARPEN
        length = (magnitude.shape[1] - 1) * HOP_LENGTH
        generator = torch.Generator().manual_seed(seed)
        phase = torch.exp(2j * torch.pi * torch.rand(magnitude.shape, generator=generator))
        previous = torch.zeros_like(phase)
        for _ in range(iterations):
            wave = _istft(magnitude * phase, length)
            rebuilt = _stft(wave)
            phase = rebuilt - previous * (MOMENTUM / (1 + MOMENTUM))
            phase = phase / (phase.abs() + 1e-16)
            previous = rebuilt
        wave = _istft(magnitude * phase, length)
        peak = wave.abs().max()
        if peak > 0:
            wave = wave * (0.9 / peak)  # Griffin-Lim's overall gain is arbitrary: normalise the peak
    return wave.numpy().astype(np.float32)


def _stft(wave: torch.Tensor) -> torch.Tensor:
    return torch.stft(wave, N_FFT, HOP_LENGTH, WIN_LENGTH, window=_window(), center=True, pad_mode="reflect",
                      return_complex=True)


def _istft(spectrum: torch.Tensor, length: int) -> torch.Tensor:
    return torch.istft(spectrum, N_FFT, HOP_LENGTH, WIN_LENGTH, window=_window(), center=True, length=length)

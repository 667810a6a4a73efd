"""The log-mel front-end: 80 mel bins of 25 ms windows every 10 ms at 16 kHz, computed with `torch.stft`.

`log_mel` gives absolute log-mel power (what the Talker predicts and Griffin-Lim inverts);
`normalize_utterance` standardises each mel bin over one utterance (what the audio
encoder reads); `spec_augment` masks random bands of mel bins and runs of frames for
training, drawn from a generator the caller seeds per (epoch, utterance), so a resumed run
masks exactly what the uninterrupted one did.

The mel filterbank is written here (a dozen lines, HTK mel scale with Slaney's area
normalisation): torchaudio's releases lag torch's, and librosa would bring numba and
llvmlite for one matrix.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from tempering.data.audio.io import SAMPLE_RATE

N_MELS = 80
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms
N_FFT = 512  # the 400-sample window zero-padded to the next power of two: finer bins for Griffin-Lim
LOG_FLOOR = 1e-5  # mel power floor before the log: digital silence maps to log(1e-5) ≈ -11.5, not -inf
MAX_TIME_MASK_FRACTION = 0.2  # SpecAugment: the time masks of one utterance cover at most this share of it


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.cache
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced in mel from 0 Hz to Nyquist, each of unit area."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))  # Slaney: equal area
    return torch.from_numpy(filters.astype(np.float32))


def num_frames(num_samples: int) -> int:
    """Frames `log_mel` makes of `num_samples` samples (centred windows: one per hop, plus one)."""
    return 1 + num_samples // HOP_LENGTH


def log_mel(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(frames, 80) float32 natural-log mel power of 16 kHz mono samples."""
    wave = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if wave.numel() < N_FFT // 2 + 1:  # reflect padding needs more samples than half a window
        wave = torch.nn.functional.pad(wave, (0, N_FFT // 2 + 1 - wave.numel()))
    spectrum = torch.stft(wave, N_FFT, HOP_LENGTH, WIN_LENGTH, window=_window(), center=True,
                          pad_mode="reflect", return_complex=True)  # (F, frames)
    power = spectrum.real.square() + spectrum.imag.square()
    mel = mel_filterbank() @ power  # (80, frames)
    return mel.clamp_min(LOG_FLOOR).log().T.contiguous()


@functools.cache
def _window() -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH)


def normalize_utterance(features: np.ndarray) -> np.ndarray:
    """Each mel bin standardised to mean 0, variance 1 over the utterance's frames (float32)."""
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    return ((features - mean) / (std + 1e-5)).astype(np.float32)


def spec_augment(features: np.ndarray, rng: np.random.Generator, *, freq_masks: int, freq_mask_bins: int,
                 time_masks: int, time_mask_frames: int) -> np.ndarray:
    """A copy of (frames, bins) features with random mel bands and runs of frames set to 0 (SpecAugment).

    Each of `freq_masks` bands is 0..freq_mask_bins bins wide; each of `time_masks` runs is
    0..time_mask_frames frames long, shortened so that all runs together cover at most
    MAX_TIME_MASK_FRACTION of the utterance. Normalised features have mean 0, so 0 is "no information".
    """
    masked = features.copy()
    frames, bins = masked.shape
    for _ in range(freq_masks):
        width = int(rng.integers(0, freq_mask_bins + 1))
        start = int(rng.integers(0, max(bins - width, 0) + 1))
        masked[:, start:start + width] = 0.0
    longest = min(time_mask_frames, math.floor(MAX_TIME_MASK_FRACTION * frames / max(time_masks, 1)))
    for _ in range(time_masks):
        length = int(rng.integers(0, max(longest, 0) + 1))
        start = int(rng.integers(0, max(frames - length, 0) + 1))
        masked[start:start + length] = 0.0
    return masked

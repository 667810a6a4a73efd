"""The log-mel front-end against transformers' reference implementation; reading, resampling, SpecAugment."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from tempering.data.audio.features import (
    HOP_LENGTH,
    log_mel,
    mel_filterbank,
    normalize_utterance,
    num_frames,
    spec_augment,
)
from tempering.data.audio.io import read_audio, write_wav
from tempering.errors import UserError


def _noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(16_000 * seconds))).astype(np.float32)


def test_log_mel_matches_transformers_reference():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    wave = _noise(1.3)
    filters = audio_utils.mel_filter_bank(257, 80, 0, 8000, 16_000, norm="slaney", mel_scale="htk")
    reference = audio_utils.spectrogram(wave, audio_utils.window_function(400, "hann"), 400, 160, fft_length=512,
                                        power=2.0, mel_filters=filters, log_mel="log", mel_floor=1e-5)
    np.testing.assert_allclose(mel_filterbank().numpy(), filters.T, atol=1e-7)
    np.testing.assert_allclose(log_mel(wave).numpy(), reference.T, atol=1e-4)


def test_frames_are_one_per_10ms_hop_and_a_tone_lands_in_its_mel_bin():
    t = np.arange(16_000) / 16_000
    low, high = (log_mel(np.sin(2 * np.pi * f * t).astype(np.float32)).numpy() for f in (300.0, 3000.0))
    assert low.shape == (num_frames(16_000), 80) == (16_000 // HOP_LENGTH + 1, 80)
    assert low.mean(0).argmax() < high.mean(0).argmax()


def test_silence_is_finite_and_normalised_bins_have_zero_mean_unit_variance():
    assert np.isfinite(log_mel(np.zeros(800, np.float32)).numpy()).all()
    normalised = normalize_utterance(log_mel(_noise()).numpy())
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-3)


def test_read_resamples_and_mixes_down(tmp_path):
    t = np.arange(22_050) / 22_050
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    soundfile.write(tmp_path / "stereo.flac", np.stack([tone, tone], 1), 22_050)
    samples = read_audio(tmp_path / "stereo.flac")
    assert samples.dtype == np.float32 and abs(len(samples) - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16_000 / len(samples) - 1000) < 5


def test_write_then_read_round_trips_and_bad_files_are_user_errors(tmp_path):
    wave = _noise(0.5)
    path = write_wav(tmp_path / "x.wav", wave)
    assert soundfile.info(str(path)).samplerate == 16_000
    np.testing.assert_allclose(read_audio(path), np.clip(wave, -1, 1), atol=1 / 16_000 * 2)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(UserError, match="bad.wav: cannot read audio"):
        read_audio(tmp_path / "bad.wav")


def test_spec_augment_is_a_function_of_its_seed_and_masks_within_bounds():
    features = np.ones((200, 80), np.float32)
    settings = {"freq_masks": 2, "freq_mask_bins": 10, "time_masks": 2, "time_mask_frames": 40}

    def masked(seed):
        return spec_augment(features, np.random.default_rng(seed), **settings)

    np.testing.assert_array_equal(masked(1), masked(1))
    assert not np.array_equal(masked(1), masked(2))
    out = masked(3)
    zero_rows = (out == 0).all(1).sum()
    assert zero_rows <= 0.2 * 200  # time masks cover at most a fifth of the utterance
    assert ((out == 0).all(0).sum()) <= 20
    assert features.min() == 1  # the input is untouched

"""Audio files in and out: read WAV/FLAC/OGG as 16 kHz mono float32, write 16-bit WAV.

Reading and writing go through `soundfile` (libsndfile) and resampling through `soxr`
(the SoX resampler, a small well-kept wheel); torchaudio is avoided on purpose because its
releases lag torch's. Several channels are averaged to one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tempering.errors import UserError

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def _soundfile():
    try:
        import soundfile
    except ImportError as error:  # the speech extra
        raise UserError("speech needs soundfile: pip install 'tempering[speech]' (or pip install soundfile)") from error
    return soundfile


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Samples of an audio file as float32 in [-1, 1], mono, at `sample_rate`; UserError if unreadable."""
    soundfile = _soundfile()
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: cannot read audio ({reason})") from None
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, rate, sample_rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`samples` at `rate` resampled to `target` Hz (soxr, high quality); unchanged when the rates agree."""
    if rate == target or len(samples) == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    try:
        import soxr
    except ImportError as error:
        raise UserError(f"audio at {rate} Hz needs resampling to {target} Hz: pip install 'tempering[speech]' "
                        "(or pip install soxr)") from error
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float samples as a 16-bit PCM WAV file (clipped to [-1, 1]); return the path."""
    soundfile = _soundfile()
    path = Path(path)
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    try:
        soundfile.write(str(path), clipped, sample_rate, subtype="PCM_16", format="WAV")
    except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
        raise UserError(f"cannot write {path}: {error}") from None
    return path


def audio_duration_s(path: str | Path) -> float:
    """Duration of an audio file from its header (no decoding); UserError if unreadable."""
    soundfile = _soundfile()
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: cannot read audio ({reason})") from None
    return info.frames / info.samplerate if info.samplerate else 0.0

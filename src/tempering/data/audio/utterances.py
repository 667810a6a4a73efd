"""Speech CSVs in, utterances with their features out: what ASR and TTS training and evaluation read.

A CSV (from `temper prep --format audio_asr|audio_tts`, or any with the same columns) has a
header with at least `path` (relative to the CSV's folder, or absolute) and `transcript`;
`phonemes` (IPA), `split` (train|val) and `duration_s` are read when present, other columns
ignored. Features are computed when the data is first opened, on a small thread pool, stored as
float16 in the on-disk feature cache (an hour of speech is ~60 MB) and memory-mapped from there:
ASR reads per-utterance normalised log-mel, the Talker predicts absolute log-mel.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempering.data.audio.feature_cache import cached_features
from tempering.data.audio.features import log_mel, normalize_utterance
from tempering.data.audio.io import read_audio
from tempering.errors import UserError

REQUIRED_COLUMNS = ("path", "transcript")


@dataclass(frozen=True)
class Utterance:
    """One row of a speech CSV."""

    path: Path
    transcript: str
    phonemes: str | None = None
    split: str | None = None  # train | val, when the CSV says


def read_speech_csv(file: str | Path) -> list[Utterance]:
    """The rows of a speech CSV; UserError names the file and line of a malformed one."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{file} does not exist: give a CSV written by `temper prep --format audio_asr` (or audio_tts)")
    try:
        with open(file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{file}: no {missing[0]!r} column (a speech CSV has the columns path,transcript"
                                "[,duration_s,phonemes,split])")
            rows = [_utterance(row, file, line) for line, row in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{file} is not a UTF-8 CSV file ({error})") from None
    if not rows:
        raise UserError(f"{file} holds no utterances")
    return rows


def _utterance(row: dict, file: Path, line: int) -> Utterance:
    path, transcript = (row.get("path") or "").strip(), row.get("transcript")
    if not path or transcript is None:
        raise UserError(f"{file}:{line}: the row has no path or no transcript")
    audio = Path(path) if Path(path).is_absolute() else file.parent / path
    phonemes = row.get("phonemes")
    split = (row.get("split") or "").strip() or None
    if split not in (None, "train", "val"):
        raise UserError(f"{file}:{line}: split is {split!r}; it must be train or val")
    return Utterance(audio, transcript.strip(), phonemes.strip() if phonemes else None, split)


def compute_features(utterances: list[Utterance], *, normalize: bool) -> list[np.ndarray]:
    """(frames, 80) float16 log-mel of each utterance (normalised per utterance for ASR); UserError if unreadable.

    Computed once per set of files and then memory-mapped from the on-disk cache (`feature_cache.py`).
    """
    def features(utterance: Utterance) -> np.ndarray:
        mel = log_mel(read_audio(utterance.path)).numpy()
        return (normalize_utterance(mel) if normalize else mel).astype(np.float16)

    missing = next((u.path for u in utterances if not u.path.is_file()), None)
    if missing is not None:
        read_audio(missing)  # its one-line UserError, before the cache key needs the file
    return cached_features([u.path for u in utterances], lambda: _map(features, utterances), normalize=normalize)


def _map(function: Callable, items: list) -> list:
    workers = min(4, os.cpu_count() or 1)
    if workers == 1 or len(items) < 8:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:  # soundfile and torch.stft release the GIL
        return list(pool.map(function, items))

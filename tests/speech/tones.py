"""Tiny procedural speech for tests: each letter a tone of its own pitch, a space a short silence.

No download and no synthesiser: a CTC model can learn to read these tones in seconds, which is
all the tests need (loss falls, transcripts come out, files are valid).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile

RATE = 16_000
TONE_S = 0.08
GAP_S = 0.02
WORDS = ["bad", "cab", "dab", "bead", "dace", "ace", "cede", "deed", "abba", "faced", "bee", "fed"]


def tone_audio(text: str, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Float32 samples spelling `text` (letters a-z, spaces) as tones, with a little seeded noise."""
    rng = np.random.default_rng(seed)
    pieces = []
    for char in text:
        n = int(TONE_S * rate)
        if char == " ":
            pieces.append(np.zeros(n, np.float32))
        else:
            t = np.arange(n) / rate
            pitch = 300.0 + 150.0 * (ord(char) - ord("a"))
            pieces.append((0.4 * np.sin(2 * np.pi * pitch * t) * np.hanning(n)).astype(np.float32))
        pieces.append(np.zeros(int(GAP_S * rate), np.float32))
    wave = np.concatenate([np.zeros(int(0.05 * rate), np.float32), *pieces, np.zeros(int(0.05 * rate), np.float32)])
    return (wave + 0.003 * rng.standard_normal(len(wave))).astype(np.float32)


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` seeded two- or three-word sentences over WORDS."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 4)))) for _ in range(count)]


def write_tone_corpus(directory: Path, count: int, seed: int = 0, *, val: int = 0) -> Path:
    """WAV files and a speech CSV (path,transcript,duration_s[,split]) of `count` tone sentences; return the CSV."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, text in enumerate(sentences(count, seed)):
        wave = tone_audio(text, seed=seed + index)
        name = f"utt{index:04d}.wav"
        soundfile.write(directory / name, wave, RATE, subtype="PCM_16")
        rows.append({"path": name, "transcript": text, "duration_s": f"{len(wave) / RATE:.3f}",
                     "split": "val" if index >= count - val else "train"})
    file = directory / "speech.csv"
    with open(file, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["path", "transcript", "duration_s", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return file

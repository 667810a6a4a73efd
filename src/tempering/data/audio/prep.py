"""`temper prep --format audio_asr|audio_tts`: a folder of audio files and transcripts → one speech CSV.

Audio files (`.wav .flac .ogg`) are found recursively under each input. A file's transcript
comes from, first match wins: (d) `--transcripts FILE` (`path<TAB>text` lines, or a CSV with
a `path` and a `transcript` or `text` column; a path matches by itself, relative to the file,
or by the audio file's name or stem); (c) a sibling `NAME.txt`; (a) LibriSpeech-style `*.trans.txt` in the
audio's folder (`ID text` per line, ID = the audio's stem); (b) an LJSpeech-style
`metadata.csv` in the audio's folder or its parent (`id|text|normalized text`, the normalised
text preferred). Skipped and counted: unreadable files, silent files (peak below 1e-4), no
transcript, an empty transcript after normalisation, durations outside the bounds. ASR
transcripts are normalised (`text.py`); TTS transcripts keep their case and punctuation, with
whitespace collapsed. With `val_fraction`, a `split` column puts each row in train or val by a
hash of its path (stable when files are added).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tempering.data.audio.io import AUDIO_EXTENSIONS, SAMPLE_RATE, read_audio
from tempering.data.audio.text import normalize_transcript
from tempering.errors import UserError

SILENCE_PEAK = 1e-4
SKIP_REASONS = ("unreadable", "silent", "no_transcript", "empty_transcript", "too_short", "too_long")


@dataclass
class AudioPrepReport:
    """What an audio prep wrote and what it skipped, by reason."""

    written: int = 0
    duration_s: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class AudioPrepOptions:
    """Settings of one audio prep run."""

    kind: str  # audio_asr | audio_tts
    min_duration_s: float = 0.0
    max_duration_s: float = float("inf")
    val_fraction: float = 0.0
    transcripts: Path | None = None
    phonemes: str | None = None  # "espeak": add espeak-ng IPA
    voice: str = "en-us"


def discover_audio(inputs: list[str]) -> list[Path]:
    """Audio files under each input (a file, or a directory searched recursively), sorted; UserError if none."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        else:
            raise UserError(f"--input {item}: no such file or directory")
    if not files:
        raise UserError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {', '.join(inputs)}")
    return files


class TranscriptFinder:
    """Looks up a file's transcript in the four layouts, caching each folder's files."""

    def __init__(self, transcripts: Path | None):
        self.explicit = read_transcript_file(transcripts) if transcripts else {}
        self.base = transcripts.parent if transcripts else None
        self._folders: dict[Path, dict[str, str]] = {}

    def find(self, audio: Path) -> str | None:
        """The transcript of `audio`, or None."""
        for key in (str(audio), str(audio.resolve()), _relative(audio, self.base), audio.name, audio.stem):
            if key is not None and key in self.explicit:
                return self.explicit[key]
        sibling = audio.with_suffix(".txt")
        if sibling.is_file():
            return sibling.read_text(encoding="utf-8", errors="replace").strip()
        return self._folder(audio.parent).get(audio.stem) or self._folder(audio.parent.parent, ljspeech_only=True) \
            .get(audio.stem)

    def _folder(self, folder: Path, ljspeech_only: bool = False) -> dict[str, str]:
        key = folder / ("#lj" if ljspeech_only else "#all")
        if key not in self._folders:
            found: dict[str, str] = {}
            if not ljspeech_only:
                for file in sorted(folder.glob("*.trans.txt")):
                    found.update(read_librispeech(file))
            if (folder / "metadata.csv").is_file():
                found.update(read_ljspeech(folder / "metadata.csv"))
            self._folders[key] = found
        return self._folders[key]


def _relative(path: Path, base: Path | None) -> str | None:
    if base is None:
        return None
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:
        return None


def read_librispeech(file: Path) -> dict[str, str]:
    """{utterance id: text} of a LibriSpeech `*.trans.txt` (`ID TEXT` per line)."""
    pairs = {}
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        ident, _, text = line.strip().partition(" ")
        if ident and text:
            pairs[ident] = text.strip()
    return pairs


def read_ljspeech(file: Path) -> dict[str, str]:
    """{id: text} of an LJSpeech `metadata.csv` (`id|text|normalized text`), the normalised text when present."""
    pairs = {}
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("|")
        if len(fields) >= 2 and fields[0].strip():
            text = fields[2] if len(fields) >= 3 and fields[2].strip() else fields[1]
            pairs[fields[0].strip()] = text.strip()
    return pairs


def read_transcript_file(file: Path) -> dict[str, str]:
    """{path: text} of `--transcripts`: `path<TAB>text` lines, or a CSV with path and transcript (or text) columns."""
    if not file.is_file():
        raise UserError(f"--transcripts {file}: no such file")
    text = file.read_text(encoding="utf-8", errors="replace")
    first = text.splitlines()[0] if text else ""
    if "\t" in first:
        return {p.strip(): t.strip() for p, _, t in (line.partition("\t") for line in text.splitlines()) if t.strip()}
    rows = list(csv.DictReader(text.splitlines()))
    column = next((c for c in ("transcript", "text") if rows and c in rows[0]), None)
    if not rows or "path" not in rows[0] or column is None:
        raise UserError(f"--transcripts {file}: expected `path<TAB>text` lines or a CSV with columns path and "
                        "transcript (or text)")
    return {row["path"].strip(): (row[column] or "").strip() for row in rows if row.get("path")}


def prep_audio(inputs: list[str], output: Path, options: AudioPrepOptions) -> AudioPrepReport:
    """Write the speech CSV for `inputs` to `output`; return what was written and skipped."""
    if options.phonemes is not None and options.phonemes != "espeak":
        raise UserError(f"--phonemes {options.phonemes}: the only phonemiser is espeak (espeak-ng)")
    if options.phonemes and shutil.which("espeak-ng") is None:
        raise UserError("--phonemes espeak needs the espeak-ng program (Debian/Ubuntu: apt-get install espeak-ng)")
    files = discover_audio(inputs)
    finder = TranscriptFinder(options.transcripts)
    report = AudioPrepReport()
    rows = []
    for audio in files:
        row = _row(audio, finder, options, report)
        if row is not None:
            row["path"] = os.path.relpath(audio.resolve(), output.resolve().parent)
            rows.append(row)
    _write_csv(output, rows, options)
    for row in rows:
        report.splits[row.get("split", "train")] += 1
    return report


def _row(audio: Path, finder: TranscriptFinder, options: AudioPrepOptions, report: AudioPrepReport) -> dict | None:
    try:
        samples = read_audio(audio)
    except UserError:
        return _skip(report, "unreadable")
    duration = len(samples) / SAMPLE_RATE
    if len(samples) == 0 or float(np.abs(samples).max()) < SILENCE_PEAK:
        return _skip(report, "silent")
    text = finder.find(audio)
    if text is None:
        return _skip(report, "no_transcript")
    transcript = normalize_transcript(text) if options.kind == "audio_asr" else re.sub(r"\s+", " ", text).strip()
    if not transcript:
        return _skip(report, "empty_transcript")
    if duration < options.min_duration_s:
        return _skip(report, "too_short")
    if duration > options.max_duration_s:
        return _skip(report, "too_long")
    row = {"transcript": transcript, "duration_s": f"{duration:.3f}"}
    if options.phonemes:
        row["phonemes"] = espeak_phonemes(text, options.voice)
    if options.val_fraction:
        row["split"] = "val" if _hash_fraction(audio.name + "/" + audio.parent.name) < options.val_fraction else "train"
    report.written += 1
    report.duration_s += duration
    return row


def _skip(report: AudioPrepReport, reason: str) -> None:
    report.skipped[reason] += 1
    return None


def _hash_fraction(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def espeak_phonemes(text: str, voice: str = "en-us") -> str:
    """espeak-ng's IPA for `text` (clause lines joined with a space)."""
    result = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice, text], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise UserError(f"espeak-ng failed on {text[:40]!r}: {result.stderr.strip()[:200]}")
    return " ".join(line.strip() for line in result.stdout.splitlines() if line.strip())


def _write_csv(output: Path, rows: list[dict], options: AudioPrepOptions) -> None:
    columns = ["path", "transcript", "duration_s"] + (["phonemes"] if options.phonemes else []) \
        + (["split"] if options.val_fraction else [])
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    partial.replace(output)

"""`temper prep --format audio_*`: each transcript layout, each skipped case counted, splits, phonemes."""

from __future__ import annotations

import csv
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from tempering.data.audio.prep import AudioPrepOptions, espeak_phonemes, prep_audio


def _wav(path, seconds=0.5, amplitude=0.3, rate=16_000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


def _rows(file):
    return list(csv.DictReader(file.read_text(encoding="utf-8").splitlines()))


def _by_name(file):
    return {row["path"].rsplit("/", 1)[-1]: row for row in _rows(file)}


def test_librispeech_ljspeech_sibling_and_explicit_transcripts(tmp_path):
    root = tmp_path / "in"
    _wav(root / "libri" / "84" / "121123" / "84-121123-0000.flac")
    (root / "libri" / "84" / "121123" / "84-121123-0000.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    _wav(root / "lj" / "wavs" / "LJ001-0001.wav")
    (root / "lj" / "metadata.csv").write_text("LJ001-0001|Printing, in the 1st sense|Printing, in the first sense\n")
    _wav(root / "own" / "a.ogg")
    (root / "own" / "a.txt").write_text("Sibling text!\n")
    _wav(root / "listed" / "b.wav")
    listed = tmp_path / "list.tsv"
    listed.write_text("in/listed/b.wav\tFrom the list\n")
    report = prep_audio([str(root)], tmp_path / "asr.csv", AudioPrepOptions("audio_asr", transcripts=listed))
    rows = _by_name(tmp_path / "asr.csv")
    assert {name: row["transcript"] for name, row in rows.items()} == {
        "84-121123-0000.flac": "go do you hear", "LJ001-0001.wav": "printing in the first sense",
        "a.ogg": "sibling text", "b.wav": "from the list"}
    assert report.written == 4 and not report.skipped
    assert float(rows["a.ogg"]["duration_s"]) == pytest.approx(0.5, abs=0.01)
    assert (tmp_path / rows["b.wav"]["path"]).is_file()  # paths are relative to the CSV


def test_a_csv_transcript_file_and_tts_keeps_case_and_punctuation(tmp_path):
    _wav(tmp_path / "in" / "c.wav")
    listed = tmp_path / "t.csv"
    listed.write_text("path,text\nc.wav,\"Hello, World.\"\n")
    prep_audio([str(tmp_path / "in")], tmp_path / "tts.csv", AudioPrepOptions("audio_tts", transcripts=listed))
    assert _rows(tmp_path / "tts.csv")[0]["transcript"] == "Hello, World."


def test_every_bad_case_is_skipped_and_counted(tmp_path):
    root = tmp_path / "in"
    for name, seconds, amplitude in [("ok", 1.0, 0.3), ("silent", 1.0, 0.0), ("short", 0.2, 0.3),
                                     ("long", 3.0, 0.3), ("notext", 1.0, 0.3), ("punct", 1.0, 0.3)]:
        _wav(root / f"{name}.wav", seconds, amplitude)
        if name != "notext":
            (root / f"{name}.txt").write_text("?!" if name == "punct" else f"the {name} one")
    (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    report = prep_audio([str(root)], tmp_path / "asr.csv",
                        AudioPrepOptions("audio_asr", min_duration_s=0.5, max_duration_s=2.0))
    assert [row["transcript"] for row in _rows(tmp_path / "asr.csv")] == ["the ok one"]
    assert dict(report.skipped) == {"unreadable": 1, "silent": 1, "too_short": 1, "too_long": 1,
                                    "no_transcript": 1, "empty_transcript": 1}


def test_val_fraction_splits_by_path_hash_stably(tmp_path):
    root = tmp_path / "in"
    for index in range(40):
        _wav(root / f"u{index}.wav", 0.3)
        (root / f"u{index}.txt").write_text(f"word {index}")
    prep_audio([str(root)], tmp_path / "a.csv", AudioPrepOptions("audio_asr", val_fraction=0.25))
    first = {r["path"]: r["split"] for r in _rows(tmp_path / "a.csv")}
    assert 3 <= list(first.values()).count("val") <= 20
    _wav(root / "extra.wav", 0.3)
    (root / "extra.txt").write_text("more")
    prep_audio([str(root)], tmp_path / "b.csv", AudioPrepOptions("audio_asr", val_fraction=0.25))
    second = {r["path"]: r["split"] for r in _rows(tmp_path / "b.csv")}
    assert {p: s for p, s in second.items() if p in first} == first  # adding a file moves no other


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (Debian: apt-get install espeak-ng; .ci/run installs it)")
def test_espeak_phonemes_column(tmp_path):
    text = "The cat sat"
    wave = tmp_path / "in" / "s.wav"
    wave.parent.mkdir()
    subprocess.run(["espeak-ng", "-w", str(wave), text], check=True)
    (tmp_path / "in" / "s.txt").write_text(text)
    prep_audio([str(tmp_path / "in")], tmp_path / "tts.csv", AudioPrepOptions("audio_tts", phonemes="espeak"))
    row = _rows(tmp_path / "tts.csv")[0]
    assert row["phonemes"] == espeak_phonemes(text) and "k" in row["phonemes"] and row["phonemes"] != text

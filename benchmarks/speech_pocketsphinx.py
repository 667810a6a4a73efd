"""The off-the-shelf CPU recogniser beside ours: PocketSphinx (PyPI `pocketsphinx`, its bundled en-us model).

    python benchmarks/speech_pocketsphinx.py [--data ../shared/data/speech/espeak] [--out FILE.json]

Every val utterance is decoded with PocketSphinx's default US-English acoustic model, language
model and dictionary (no adaptation to espeak-ng voices); hypotheses are lower-cased and
normalised like our transcripts, then scored against `transcript` with jiwer, overall and per
voice. Real-time factor = decoding seconds / audio seconds. Compare with speech_asr.py's numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import jiwer
import numpy as np
from pocketsphinx import Decoder

from tempering.data.audio.io import read_audio
from tempering.data.audio.text import normalize_transcript

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Decode, score, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "speech" / "espeak")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speech_pocketsphinx.json")
    args = parser.parse_args()
    rows = list(csv.DictReader((args.data / "val.csv").read_text(encoding="utf-8").splitlines()))
    decoder = Decoder(samprate=16_000, loglevel="FATAL")
    hypotheses, audio_s, compute_s = [], 0.0, 0.0
    for row in rows:
        samples = read_audio(args.data / row["path"])
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
        started = time.perf_counter()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        compute_s += time.perf_counter() - started
        audio_s += len(samples) / 16_000
        hypotheses.append(normalize_transcript(decoder.hyp().hypstr if decoder.hyp() else ""))
    references = [row["transcript"] for row in rows]
    by_voice = defaultdict(lambda: ([], []))
    for row, hypothesis in zip(rows, hypotheses, strict=True):
        by_voice[row["voice"].split("+")[0]][0].append(row["transcript"])
        by_voice[row["voice"].split("+")[0]][1].append(hypothesis)
    result = {"wer": jiwer.wer(references, hypotheses), "cer": jiwer.cer(references, hypotheses),
              "real_time_factor": compute_s / audio_s, "audio_s": audio_s,
              "per_voice": {v: round(jiwer.wer(r, h), 4) for v, (r, h) in sorted(by_voice.items())}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Talker synthesis speed: seconds of compute per second of audio for `talker_small` + Griffin-Lim, on this CPU.

    python benchmarks/speech_talker_speed.py [--data ../shared/data/speech/espeak] [--sentences 20]

Speed does not depend on what the weights learnt, only on the frames made, so a freshly
initialised `talker_small` speaks the first val sentences with durations set to each sentence's
real length (its frames spread evenly over its characters, as a trained Talker would roughly
predict); the clock covers the Talker's forward pass and the 32 Griffin-Lim iterations.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from tempering.data.audio.text import normalize_transcript
from tempering.data.audio.vocoder import griffin_lim
from tempering.models.talker import TALKER
from tempering.tokenizer.characters import build_character_tokenizer

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def main() -> None:
    """Synthesise, time, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "speech" / "espeak")
    parser.add_argument("--sentences", type=int, default=20)
    args = parser.parse_args()
    rows = list(csv.DictReader((args.data / "val.csv").read_text(encoding="utf-8").splitlines()))[:args.sentences]
    tokenizer = build_character_tokenizer("abcdefghijklmnopqrstuvwxyz' ")
    arch = TALKER.architecture("talker_small", {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id})
    model = TALKER.build(arch).eval()
    audio_s = compute_s = 0.0
    for row in rows:
        ids = tokenizer.encode(normalize_transcript(row["transcript"]))
        frames = int(float(row["duration_s"]) * 100) + 1
        durations = torch.full((1, len(ids)), frames // len(ids))
        durations[0, -1] += frames - int(durations.sum())
        started = time.perf_counter()
        mels, _, lengths = model(torch.tensor([ids]), torch.tensor([len(ids)]), durations)
        wave = griffin_lim(mels[0, :int(lengths[0])])
        compute_s += time.perf_counter() - started
        audio_s += len(wave) / 16_000
    print(json.dumps({"sentences": len(rows), "audio_s": round(audio_s, 2), "compute_s": round(compute_s, 2),
                      "real_time_factor": round(compute_s / audio_s, 4), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()

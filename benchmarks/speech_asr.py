"""Speech recognition on real sentences spoken by espeak-ng voices: WER after a CPU-time budget of training.

    python benchmarks/speech_asr.py [--data ../shared/data/speech/espeak] [--cpu-minutes 30]
                                    [--preset audio_enc_small] [--batch-size 16] [--lr 1e-3]
                                    [--precision bf16] [--work /tmp/speech_asr] [--out FILE.json]

1. `temper pretrain --preset audio_enc_small --data train.csv --val-data val.csv` with a constant
   learning rate after warmup (the end of a CPU-time budget is not known in steps, so there is no
   decay to schedule), evaluated every --eval-steps; when the training process has used
   --cpu-minutes of CPU time (user + system, all its threads) it gets SIGTERM, which checkpoints
   and stops. best/ is the checkpoint with the lowest validation WER.
2. `temper eval` on val.csv (greedy CTC): WER and CER over the 200 unseen sentences.
3. Per voice: the best checkpoint transcribes every val file (the `temper transcribe` code path),
   WER per espeak-ng voice with jiwer; the real-time factor is compute seconds per audio second.
4. The curve: validation WER against training CPU-minutes and steps, from metrics.jsonl.
Output: JSON (--out) and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "speech" / "espeak"


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its children so far."""
    try:
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    except psutil.NoSuchProcess:
        return 0.0


def train(args, run: Path) -> dict:
    """Run the training process until it ends or spends its CPU budget; return CPU and wall seconds."""
    command = [sys.executable, "-m", "tempering", "pretrain", "--preset", args.preset,
               "--data", args.data / "train.csv", "--val-data", args.data / "val.csv", "--save-dir", run,
               "--max-steps", args.max_steps, "--batch-size", args.batch_size, "--lr", args.lr,
               "--lr-schedule", "constant", "--warmup-steps", args.warmup_steps, "--eval-steps", args.eval_steps,
               "--precision", args.precision, "--save-steps", args.eval_steps, "training.log_steps=10",
               "--seed", args.seed]
    started = time.perf_counter()
    with open(run.parent / "train.log", "a") as log:
        process = subprocess.Popen(list(map(str, command)), stdout=log, stderr=subprocess.STDOUT)
        watched, used, stopped = psutil.Process(process.pid), 0.0, False
        while process.poll() is None:
            used = max(used, cpu_seconds(watched))
            if not stopped and used >= args.cpu_minutes * 60:
                process.send_signal(signal.SIGTERM)  # checkpoints, then exits
                stopped = True
            time.sleep(2)
    return {"cpu_s": used, "wall_s": time.perf_counter() - started, "budget_reached": stopped,
            "returncode": process.returncode}


def curve(run: Path) -> list[dict]:
    """(step, validation WER/CER/loss, training CPU is not logged: wall seconds) per evaluation."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = {r["step"]: r["time_s"] for r in records if r.get("split") == "train"}
    return [{"step": r["step"], "wall_s": times.get(r["step"]), "val_loss": round(r["loss"], 4),
             "wer": round(r["wer"], 4), "cer": round(r["cer"], 4)} for r in records if r.get("split") == "val"]


def per_voice(run: Path, data: Path) -> tuple[dict, dict]:
    """WER per voice of the best checkpoint's greedy transcripts, and the transcription timing."""
    import jiwer

    from tempering.generation.transcribe import load_asr_model, transcribe_files

    rows = list(csv.DictReader((data / "val.csv").read_text(encoding="utf-8").splitlines()))
    loaded = load_asr_model(str(run))
    result = transcribe_files(loaded, [str(data / r["path"]) for r in rows])
    by_voice = defaultdict(lambda: ([], []))
    for row, text in zip(rows, result.texts, strict=True):
        accent = row["voice"].split("+")[0]
        by_voice[accent][0].append(row["transcript"])
        by_voice[accent][1].append(text)
    wer = {voice: {"utterances": len(refs), "wer": round(jiwer.wer(refs, hyps), 4)}
           for voice, (refs, hyps) in sorted(by_voice.items())}
    overall = {"wer": round(jiwer.wer([r["transcript"] for r in rows], result.texts), 4),
               "audio_s": round(result.audio_s, 1), "compute_s": round(result.compute_s, 2),
               "real_time_factor": round(result.real_time_factor, 4), "threads": os.cpu_count()}
    return wer, overall


def main() -> None:
    """Train, evaluate, transcribe; print and save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cpu-minutes", type=float, default=30.0)
    parser.add_argument("--preset", default="audio_enc_small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/speech_asr"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speech_asr.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.work / "run"
    training = train(args, run)
    evaluated = subprocess.run([sys.executable, "-m", "tempering", "eval", "--checkpoint", str(run), "--data",
                                str(args.data / "val.csv"), "--json", "--batch-size", "16"],
                               capture_output=True, text=True, check=True)
    overall = json.loads(evaluated.stdout.strip().splitlines()[-1])
    voices, transcription = per_voice(run, args.data)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "training": training,
              "eval": overall, "per_voice": voices, "transcribe": transcription, "curve": curve(run)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    val = next(iter(overall["datasets"].values()))
    print(f"| {args.preset} | {training['cpu_s'] / 60:.1f} CPU-min ({training['wall_s'] / 60:.1f} min wall) | "
          f"step {overall['step']} | WER {val['wer']:.3f} | CER {val['cer']:.3f} | "
          f"RTF {transcription['real_time_factor']:.3f} |")
    for voice, values in voices.items():
        print(f"| {voice} | {values['utterances']} | {values['wer']:.3f} |")


if __name__ == "__main__":
    main()

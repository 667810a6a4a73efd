"""Talker intelligibility after a CPU-time budget of training, and its synthesis speed.

    python benchmarks/speech_talker.py --asr ASR_RUN_OR_CHECKPOINT [--cpu-minutes 30] [--count 3000]
                                       [--voice en-us+m1] [--speed 170] [--work /tmp/speech_talker]

1. Data, like a single-speaker TTS set (one voice, as LJSpeech is one reader): `speech_synthesise.py`
   speaks --count new sentences of the Python docs in --voice at --speed words per minute (none of
   them in the shared val split), and the 200 sentences of ../shared/data/speech/espeak/val.csv in
   the same voice — the val sentences stay the measure; only the voice is fixed.
2. `temper pretrain --preset talker_small --data tts/synth.csv --asr-checkpoint ASR` with a constant
   learning rate after warmup, validated every --eval-steps on every 4th val sentence (50: the
   intelligibility pass vocodes and transcribes each one), until it has used --cpu-minutes of CPU
   time (the durations' forced alignment by the ASR at start-up included); then SIGTERM.
3. `temper eval` of the run (its best/: lowest validation loss) on all 200 val sentences: mel loss and intelligibility
   (the ASR's CER and WER on the Talker's Griffin-Lim audio). Beside it, the same ASR's CER on
   espeak-ng's own audio of those sentences in that voice: the ceiling the Talker is judged against.
4. Synthesis speed: that Talker speaks the first --speed-sentences val sentences (Talker
   forward + Griffin-Lim, the `temper generate --speak` path), wall and CPU seconds per audio second.
Output: JSON (--out) and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from cpu_budget import run_with_cpu_budget

REPO = Path(__file__).resolve().parents[1]
SHARED_VAL = REPO.parent / "shared" / "data" / "speech" / "espeak" / "val.csv"


def synthesise(output: Path, *extra) -> None:
    """speech_synthesise.py into `output` unless its synth.csv is already there."""
    if not (output / "synth.csv").is_file():
        subprocess.run([sys.executable, str(Path(__file__).with_name("speech_synthesise.py")), "--output", output,
                        *map(str, extra)], check=True)


def every_fourth(source: Path, target: Path) -> Path:
    """Write every 4th row of a speech CSV (absolute paths) to `target`."""
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows({**row, "path": str((source.parent / row["path"]).resolve())} for row in rows[::4])
    return target


def evaluate(checkpoint: Path, data: Path, *extra) -> dict:
    """`temper eval --json` of a speech checkpoint on one CSV: that dataset's scores."""
    result = subprocess.run([sys.executable, "-m", "tempering", "eval", "--checkpoint", str(checkpoint), "--data",
                             str(data), "--json", "--batch-size", "16", *map(str, extra)],
                            capture_output=True, text=True, check=True)
    return next(iter(json.loads(result.stdout.strip().splitlines()[-1])["datasets"].values()))


def curve(run: Path) -> list[dict]:
    """Validation loss and intelligibility per evaluation, with the wall seconds of training at that step."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = {r["step"]: r["time_s"] for r in records if r.get("split") == "train"}
    return [{"step": r["step"], "wall_s": times.get(r["step"]), "val_loss": round(r["loss"], 4),
             "mel_l1": round(r["mel_l1"], 4), "intelligibility_cer": round(r["intelligibility_cer"], 4),
             "intelligibility_wer": round(r["intelligibility_wer"], 4)}
            for r in records if r.get("split") == "val" and "intelligibility_cer" in r]


def synthesis_speed(checkpoint: Path, data: Path, sentences: int) -> dict:
    """Seconds of compute (wall and process CPU) per second of audio the Talker makes, Griffin-Lim included."""
    from tempering.data.audio.io import SAMPLE_RATE
    from tempering.generation.speak import load_talker, speak

    with open(data, newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:sentences]
    loaded = load_talker(str(checkpoint))
    speak(loaded, texts[0])  # warm-up: first-call allocations and the cached filterbank
    wall, cpu, audio_s = time.perf_counter(), time.process_time(), 0.0
    for text in texts:
        samples, _ = speak(loaded, text)
        audio_s += len(samples) / SAMPLE_RATE
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"sentences": len(texts), "audio_s": round(audio_s, 2), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "real_time_factor_wall": round(wall / audio_s, 4), "real_time_factor_cpu": round(cpu / audio_s, 4)}


def main() -> None:
    """Synthesise the data, train within the budget, evaluate, time synthesis; print and save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asr", type=Path, required=True, help="the ASR run or checkpoint (durations and judge)")
    parser.add_argument("--cpu-minutes", type=float, default=30.0, help="training budget in CPU minutes (default 30)")
    parser.add_argument("--count", type=int, default=3000, help="training sentences to synthesise (default 3000)")
    parser.add_argument("--voice", default="en-us+m1", help="the one espeak-ng voice of the set (default en-us+m1)")
    parser.add_argument("--speed", type=int, default=170, help="words per minute (default 170)")
    parser.add_argument("--preset", default="talker_small", help="Talker preset (default talker_small)")
    parser.add_argument("--batch-size", type=int, default=16, help="utterances per step (default 16)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate after warmup (default 1e-3)")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warmup steps (default 100)")
    parser.add_argument("--eval-steps", type=int, default=200, help="validate every N steps (default 200)")
    parser.add_argument("--precision", default="bf16", help="training precision (default bf16)")
    parser.add_argument("--speed-sentences", type=int, default=20, help="val sentences timed for speed (default 20)")
    parser.add_argument("--skip-training", action="store_true",
                        help="evaluate the run already in --work instead of training it")
    parser.add_argument("--work", type=Path, default=Path("/tmp/speech_talker"), help="work directory")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speech_talker.json",
                        help="where to write the JSON result")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    voice = ["--voice", args.voice, "--speed", args.speed]
    synthesise(args.work / "tts", "--count", args.count, "--seed", 1, *voice)
    synthesise(args.work / "tts_val", "--sentences-of", SHARED_VAL, *voice)
    val_all = args.work / "tts_val" / "synth.csv"
    val_50 = every_fourth(val_all, args.work / "tts_val_50.csv")
    run = args.work / "run"
    command = [sys.executable, "-m", "tempering", "pretrain", "--preset", args.preset, "--data",
               args.work / "tts" / "synth.csv", "--val-data", val_50, "--asr-checkpoint", args.asr, "--save-dir", run,
               "--max-steps", 100_000, "--batch-size", args.batch_size, "--lr", args.lr, "--lr-schedule", "constant",
               "--warmup-steps", args.warmup_steps, "--eval-steps", args.eval_steps, "--save-steps", args.eval_steps,
               "--precision", args.precision, "training.log_steps=10"]
    previous = json.loads(args.out.read_text()) if args.skip_training and args.out.is_file() else {}
    training = previous.get("training") if args.skip_training else \
        run_with_cpu_budget(command, args.cpu_minutes * 60, args.work / "train.log")
    if training is None:  # trained by an earlier version of this script: the budget was its stop
        training = {"cpu_s": args.cpu_minutes * 60, "wall_s": float("nan"), "budget_reached": True}
    talker = evaluate(run, val_all)  # the run's best/ (lowest validation loss), as `temper eval RUN` picks
    ceiling = evaluate(args.asr, val_all)
    speed = synthesis_speed(run, val_all, args.speed_sentences)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "training": training, "eval": talker,
              "asr_on_espeak_audio": ceiling, "synthesis": speed, "curve": curve(run)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"| {args.preset} | {training['cpu_s'] / 60:.1f} CPU-min ({training['wall_s'] / 60:.1f} min wall) | "
          f"mel L1 {talker['mel_l1']:.3f} | intelligibility CER {talker['intelligibility_cer']:.3f} "
          f"WER {talker['intelligibility_wer']:.3f} | ASR on espeak-ng audio CER {ceiling['cer']:.3f} "
          f"WER {ceiling['wer']:.3f} | synthesis RTF {speed['real_time_factor_wall']:.3f} wall, "
          f"{speed['real_time_factor_cpu']:.3f} CPU |")
    for point in result["curve"]:
        print(f"| {point['step']} | {point['val_loss']} | {point['intelligibility_cer']} |")


if __name__ == "__main__":
    main()

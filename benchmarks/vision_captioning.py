"""Image captioning on the built-in sample images: exact match on held-out attribute combinations, CER on words, images/s.

Drives the real `temper` CLI, as a user would, in a work directory:
  1. `temper sample-corpus --images` (scenes with held-out colour-shape pairs; rendered words),
  2. a 512-token tokenizer on the sample prose and the training captions,
  3. the caption decoder: `temper pretrain --preset tiny` on the training captions as text
     (its tokens/s is the text-decoder figure the images/s stands beside),
  4. `temper pretrain --preset vision_small --lm DECODER` on scenes (then words), for a fixed
     number of steps or until its process has used --cpu-minutes of CPU (psutil; SIGTERM, which
     checkpoints), evaluating every --eval-steps: loss, exact match and CER on the first --num-val
     validation images.
Prints the process CPU minutes, the validation curve (step, wall and telemetry-CPU minutes, loss, exact match, CER),
training images/s
(caption tokens/s × images per caption token), the data-wait fraction the telemetry measured,
and the first step and CPU-minute at which exact match reached --target; for scenes, the best
checkpoint's per-object accuracy on held-out against seen colour-shape pairs (caption_errors.py).

    python benchmarks/vision_captioning.py --workdir /tmp/vision_bench --steps 1500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from caption_errors import error_report, greedy
from cpu_budget import run_with_cpu_budget

from tempering.errors import EXIT_PREEMPTED


def temper(*args, cwd: Path) -> float:
    """Run `python -m tempering ARGS` in `cwd`; return the wall time (s). Fails loudly."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tempering", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "200"})
    if result.returncode:
        raise SystemExit(f"temper {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def temper_budgeted(*args, cwd: Path, log: Path, cpu_minutes: float) -> dict:
    """Run `python -m tempering ARGS`, sending SIGTERM (it checkpoints, then exits) once it has used `cpu_minutes`."""
    result = run_with_cpu_budget([sys.executable, "-m", "tempering", *args], cpu_minutes * 60, log, cwd=cwd,
                                 env={**os.environ, "COLUMNS": "200"})
    if result["returncode"] and not (result["budget_reached"] and result["returncode"] == EXIT_PREEMPTED):
        raise SystemExit(f"temper {' '.join(map(str, args))} failed: see {log}")
    return {"process_cpu_min": round(result["cpu_s"] / 60, 2), "wall_min": round(result["wall_s"] / 60, 2),
            "budget_reached": result["budget_reached"]}


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl as a list of dicts."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def prepare(work: Path, num_images: int, num_val: int, recolour: float = 0.0) -> None:
    """Sample images, tokenizer, caption text, and the caption decoder (skipped when already there)."""
    if not (work / "images" / "scenes.json").is_file():
        temper("sample-corpus", "--images", "--output", "images", "--num-images", num_images, "--recolour", recolour,
               cwd=work)
    for name in ("scenes", "words"):  # the first num_val validation images: a fixed-size, i.i.d. held-out set
        rows = json.loads((work / "images" / f"{name}.val.json").read_text())
        (work / "images" / f"{name}.val{num_val}.json").write_text(json.dumps(rows[:num_val], indent=1) + "\n")
    if not (work / "corpus").is_dir():
        temper("sample-corpus", "--output", "corpus", cwd=work)
    captions = work / "captions.txt"
    if not captions.is_file():
        lines = [row["caption"] for name in ("scenes", "words")
                 for row in json.loads((work / "images" / f"{name}.json").read_text())]
        captions.write_text("\n\n".join(lines) + "\n")  # a blank line ends a document
    if not (work / "tok").is_dir():
        temper("tokenizer", "train", "--input", "corpus/prose/train.jsonl", "captions.txt", "--vocab-size", 512,
               "--output", "tok", cwd=work)


def train_decoder(work: Path, steps: int, preset: str) -> dict:
    """The caption decoder: a decoder preset (tiny by default) on the training captions (one document each)."""
    run = work / "decoder"
    if (run / "summary.json").is_file():
        print(f"reusing {run}", flush=True)
    else:
        temper("pretrain", "--preset", preset, "--data", "captions.txt", "--tokenizer", "tok", "--save-dir", run,
               "--seq-len", 64, "--batch-size", 32, "--lr", "3e-3", "--warmup-steps", 20, "--max-steps", steps,
               "--val-split", "0.02", "--eval-steps", steps, "--no-compile", cwd=work)
    train = [r for r in records(run) if r.get("split") == "train"]
    return {"tokens_per_s": sum(r["tokens_per_s"] for r in train[1:]) / max(len(train) - 1, 1),
            "val_loss": json.loads((run / "summary.json").read_text())["best_val_loss"]}


def train_captioner(work: Path, name: str, args) -> dict:
    """vision_small on one image set, within --cpu-minutes of process CPU; its validation curve and throughput."""
    run = work / f"vision_{name}{args.tag}"
    spent = temper_budgeted("pretrain", "--preset", "vision_small", "--lm", "decoder", "--data", f"images/{name}.json",
           "--val-data", f"images/{name}.val{args.num_val}.json",
           "--save-dir", work / f"vision_{name}{args.tag}", "--batch-size", args.batch_size, "--lr", args.lr,
           "--warmup-steps", args.warmup_steps, "--lr-schedule", args.lr_schedule, "--max-steps", args.steps,
           "--eval-steps", args.eval_steps, "--save-steps", args.eval_steps, "--no-compile",
           "--precision", args.precision,
           f"vision.train_lm={str(args.train_lm).lower()}", "training.log_steps=10", "tracking.telemetry_steps=10",
           *args.override, cwd=work, log=work / f"vision_{name}{args.tag}.log", cpu_minutes=args.cpu_minutes)
    result = {**spent, **report(run, args)}
    if name == "scenes" and (run / "best").is_dir():  # which objects fail: held-out against seen pairs
        result["errors"] = error_report(greedy(run / "best", work / "images" / f"scenes.val{args.num_val}.json"))
    return result


def report(run: Path, args) -> dict:
    """The validation curve with wall and process-CPU minutes, images/s and the data-wait share of a captioning run.

    CPU minutes integrate the telemetry's per-interval `cpu_pct` (this process, all threads: the
    prefetch thread and evaluation included) over wall time: on a shared machine they, not wall
    time, say what the run cost.
    """
    metrics = records(run)
    train = [r for r in metrics if r.get("split") == "train"]
    wall = {r["step"]: r["time_s"] for r in train}
    cpu_s, cpu_at, previous = 0.0, {0: 0.0}, 0.0
    for record in (r for r in metrics if r.get("split") == "system" and r["step"] in wall):
        cpu_s += record["cpu_pct"] / 100 * (wall[record["step"]] - previous)
        previous = wall[record["step"]]
        cpu_at[record["step"]] = cpu_s
    last = train[-1]
    images_per_token = last["step"] * args.batch_size / last["tokens_seen"]
    steady = train[len(train) // 10:]  # past warm-up of caches and threads
    tokens_per_s = sum(r["tokens_per_s"] for r in steady) / len(steady)
    waits = [r["data_wait_frac"] for r in metrics if "data_wait_frac" in r]
    curve = [{"step": r["step"], "wall_min": round(wall.get(r["step"], 0.0) / 60, 2),
              "cpu_min": round(cpu_at.get(r["step"], float("nan")) / 60, 2), "loss": round(r["loss"], 4),
              "exact_match": round(r["exact_match"], 4), "cer": round(r["cer"], 4)}
             for r in metrics if r.get("split") == "val"]
    reached = next((point for point in curve if point["exact_match"] >= args.target), None)
    return {"curve": curve, "caption_tokens_per_s": round(tokens_per_s, 1),
            "images_per_s": round(tokens_per_s * images_per_token, 1),
            "data_wait_frac_mean": round(sum(waits) / len(waits), 4) if waits else None,
            "reached_target": reached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vision_bench"), help="Work directory (reused).")
    parser.add_argument("--num-images", type=int, default=4000, help="Training images per set (sample-corpus).")
    parser.add_argument("--num-val", type=int, default=400,
                        help="Validation images per set: the first N of sample-corpus's held-out split.")
    parser.add_argument("--recolour", type=float, default=0.0,
                        help="Fraction of training shapes painted an off-palette colour, captioned 'other'.")
    parser.add_argument("--decoder-preset", default="tiny", help="Decoder preset of the caption LM.")
    parser.add_argument("--decoder-steps", type=int, default=400, help="Caption-decoder pretraining steps.")
    parser.add_argument("--steps", type=int, default=1500, help="Captioner training steps.")
    parser.add_argument("--eval-steps", type=int, default=100, help="Validate (and save) every N steps.")
    parser.add_argument("--batch-size", type=int, default=32, help="Captioner images per step.")
    parser.add_argument("--lr", default="2e-3", help="Captioner peak learning rate.")
    parser.add_argument("--warmup-steps", type=int, default=50, help="Captioner warm-up steps.")
    parser.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant", "wsd"],
                        help="Captioner learning-rate schedule after warm-up.")
    parser.add_argument("--train-lm", action=argparse.BooleanOptionalAction, default=True,
                        help="Train the caption LM with the encoder (vision.train_lm).")
    parser.add_argument("--sets", default="scenes,words", help="Image sets to train on, comma-separated.")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="Captioner precision.")
    parser.add_argument("--cpu-minutes", type=float, default=30.0,
                        help="Stop the captioner (SIGTERM: it checkpoints) once its process has used this much CPU.")
    parser.add_argument("--target", type=float, default=0.9, help="Exact match the report looks for.")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Extra config overrides for the captioner run (e.g. model.d_model=128).")
    parser.add_argument("--tag", default="", help="Suffix of the captioner run dirs (several runs, one workdir).")
    parser.add_argument("--report-only", action="store_true", help="Report the runs already in --workdir.")
    args = parser.parse_args()
    if args.report_only:
        for name in args.sets.split(","):
            if (args.workdir / f"vision_{name}{args.tag}" / "metrics.jsonl").is_file():
                print(json.dumps({name: report(args.workdir / f"vision_{name}{args.tag}", args)}))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    prepare(args.workdir, args.num_images, args.num_val, args.recolour)
    result = {"decoder": train_decoder(args.workdir, args.decoder_steps, args.decoder_preset)}
    print(json.dumps({"decoder": result["decoder"]}), flush=True)
    for name in args.sets.split(","):
        result[name] = train_captioner(args.workdir, name, args)
        print(json.dumps({name: result[name]}), flush=True)
    (args.workdir / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

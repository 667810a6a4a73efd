"""Training throughput and MFU of `temper pretrain` on this machine.

Runs the real CLI (data loading, loop, logging included) on shards of the built-in
sample corpus, with and without `--compile`, and reports tokens/s and model FLOPs
utilisation against the fp32 matmul rate measured in the same run:

    python benchmarks/train_throughput.py [--preset nano] [--seq-len 256] [--batch-size 8] [--steps 40]

FLOPs per token = 6·N + 12·L·d·T, with N the parameters that take part in matmuls
(everything but the embedding lookup; the output head counts) and the second term the
attention score and value products of L layers, width d, sequence length T.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, add_model_arguments, flops_per_token, matmul_flops_per_s, prepare_shards


def run_training(shards: Path, tok: Path, save_dir: Path, args, compile_model: bool) -> dict:
    """Train for args.steps steps and return median tokens/s over the steps after warm-up."""
    command = [sys.executable, "-m", "tempering", "pretrain", "--data", str(shards), "--tokenizer", str(tok),
               "--save-dir", str(save_dir), "--preset", args.preset, "--seq-len", str(args.seq_len),
               "--batch-size", str(args.batch_size), "--max-steps", str(args.steps), "--val-split", "0",
               "--restart", "training.log_steps=1", "--lr-schedule", "constant"]
    if compile_model:
        command.append("--compile")
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall_s = time.perf_counter() - start
    records = [json.loads(line) for line in (save_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if r.get("split") == "train"][args.warmup:]
    first = next(r for r in records if r.get("split") == "train")
    return {"tokens_per_s": statistics.median(speeds), "first_step_time_s": first["time_s"], "wall_s": wall_s}


def main() -> None:
    """Measure and print a Markdown table; write JSON next to it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="Steps left out of the median.")
    parser.add_argument("--no-compile", action="store_true", help="Skip the --compile row.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-bench")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args()

    shards, tok = prepare_shards(args.work, args.vocab_size)
    peak = matmul_flops_per_s()
    per_token = flops_per_token(args.preset, args.vocab_size, args.seq_len)
    rows = {}
    for compiled in ([False] if args.no_compile else [False, True]):
        result = run_training(shards, tok, args.work / f"run-compile-{compiled}", args, compiled)
        result["mfu"] = result["tokens_per_s"] * per_token / peak
        rows["compile" if compiled else "eager"] = result
    peak_after = matmul_flops_per_s()
    report = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}",
              "preset": args.preset, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "flops_per_token": per_token, "matmul_fp32_flops_per_s": [peak, peak_after], "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"fp32 matmul 2048²: {peak / 1e9:.0f} GFLOP/s before, {peak_after / 1e9:.0f} after; "
          f"{per_token / 1e6:.1f} MFLOP per token")
    print("| mode | tokens/s | MFU | time to first step (s) |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['first_step_time_s']:.1f} |")


if __name__ == "__main__":
    main()

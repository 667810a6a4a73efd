"""SFT throughput with packing vs padding, and DPO peak memory with a live vs precomputed reference.

    python benchmarks/sft_dpo.py [--steps 20] [--dpo-preset small] [--out benchmarks/results/sft_dpo.json]

Both run the real CLI on the sample chat set (`temper sample-corpus` builds it from the
standard library's docstrings). SFT tokens/s counts non-pad tokens, the same quantity for
both modes; peak memory is the child process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, prepare_shards


def run_measured(command: list[str]) -> int:
    """Run a temper command in a fresh parent; return the child's peak RSS in bytes."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "tempering", *command],
                            check=True, capture_output=True, text=True)
    return int(result.stdout.strip()) * 1024  # Linux reports kilobytes


def base_checkpoint(work: Path, preset: str, shards: Path, tok: Path) -> Path:
    """A checkpoint of `preset` after one pretraining step (the weights hardly matter for speed)."""
    run = work / f"base-{preset}"
    if not (run / "final").is_dir():
        run_measured(["pretrain", "--preset", preset, "--data", str(shards), "--tokenizer", str(tok),
                      "--save-dir", str(run), "--max-steps", "1", "--batch-size", "2", "--seq-len", "256",
                      "--val-split", "0", "--restart"])
    return run


def median_train(run_dir: Path, key: str, skip: int) -> float:
    """Median of a train metric over the logged steps after the first `skip`."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    values = [r[key] for r in records if r.get("split") == "train"][skip:]
    return statistics.median(values) if values else 0.0


def main() -> None:
    """Measure, print a Markdown table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dpo-preset", default="small", help="Preset for the DPO memory rows (default small).")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-bench")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sft_dpo.json")
    args = parser.parse_args()

    shards, tok = prepare_shards(args.work, 8192, ("prose",))
    chat = args.work / "corpus" / "chat"
    if not (chat / "chat_train.jsonl").exists():  # a corpus written before the chat set existed
        subprocess.run([sys.executable, "-m", "tempering", "sample-corpus", "--output", str(args.work / "corpus")],
                       check=True, stdout=subprocess.DEVNULL)
    common = ["--seq-len", "256", "--batch-size", "8", "--val-split", "0", "--restart", "training.log_steps=1",
              "--lr-schedule", "constant"]
    report: dict = {"sft": {}, "dpo": {}}
    nano = base_checkpoint(args.work, "nano", shards, tok)
    for mode, extra in (("packing", []), ("padding", ["--no-packing"])):
        run = args.work / f"sft-{mode}"
        rss = run_measured(["sft", "--checkpoint", str(nano), "--data", str(chat / "chat_train.jsonl"),
                            "--save-dir", str(run), "--max-steps", str(args.steps), *common, *extra])
        report["sft"][mode] = {"tokens_per_s": median_train(run, "tokens_per_s", args.warmup), "peak_rss": rss}
    base = base_checkpoint(args.work, args.dpo_preset, shards, tok)
    for mode, extra in (("live reference", []), ("precomputed reference", ["--precompute-ref"])):
        run = args.work / f"dpo-{mode.split()[0]}"
        rss = run_measured(["dpo", "--checkpoint", str(base), "--data", str(chat / "preference_train.jsonl"),
                            "--save-dir", str(run), "--max-steps", "3", *common, *extra,
                            "data.datasets.0.limit=64"])
        report["dpo"][mode] = {"peak_rss": rss, "median_train_loss": median_train(run, "loss", 0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sft = report["sft"]
    print("| SFT (nano, seq 256, batch 8) | non-pad tokens/s | peak RSS (MB) |\n|---|---|---|")
    for mode, row in sft.items():
        print(f"| {mode} | {row['tokens_per_s']:,.0f} | {row['peak_rss'] / 1e6:,.0f} |")
    print(f"packing / padding throughput: {sft['packing']['tokens_per_s'] / sft['padding']['tokens_per_s']:.2f}×")
    print(f"\n| DPO ({args.dpo_preset}, 64 pairs, batch 8) | peak RSS (MB) |\n|---|---|")
    for mode, row in report["dpo"].items():
        print(f"| {mode} | {row['peak_rss'] / 1e6:,.0f} |")


if __name__ == "__main__":
    main()

"""Data-parallel overhead on this CPU, and what OMP_WAIT_POLICY does to a shared CPU.

    python benchmarks/ddp_overhead.py [--preset nano] [--steps 20] [--rounds 3] [--out benchmarks/results/ddp_overhead.json]

Rows (same global batch, same steps; rows alternate for --rounds rounds, median per row):
  single_2threads   one process, OMP_NUM_THREADS=2
  ddp_2x1           torchrun, 2 ranks × OMP_NUM_THREADS=1, training.strategy=ddp (gloo)
  fsdp_2x1          the same with training.strategy=fsdp
  passive_alone / active_alone          one process, 2 threads, OMP_WAIT_POLICY=PASSIVE / ACTIVE
  passive_shared / active_shared        the same while another 2-thread torch job runs (a co-tenant)
Per row: median tokens/s over the steps after the first 3. Writes JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import machine_description, prepare_shards  # noqa: E402

CO_TENANT = ("import torch, time\ntorch.set_num_threads(2)\na = torch.randn(256, 256)\nend = time.time() + 3600\n"
             "while time.time() < end:\n    for _ in range(200):\n        a = torch.tanh(a @ a.T / 256)\n")


def main() -> None:
    """Measure every row for every round; write the JSON; print the table."""
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    shards, tokenizer = prepare_shards(args.work, vocab_size=8192)
    rows = {name: [] for name in ("single_2threads", "ddp_2x1", "fsdp_2x1", "passive_alone", "active_alone",
                                  "passive_shared", "active_shared")}
    for round_index in range(args.rounds):
        for name in rows:
            rows[name].append(run(name, args, shards, tokenizer, args.work / "runs" / f"{name}-{round_index}"))
    summary = {name: round(statistics.median(values), 1) for name, values in rows.items()}
    report = {"machine": machine_description(), "preset": args.preset, "steps": args.steps, "rounds": args.rounds,
              "global_batch": args.batch_size * 2, "seq_len": args.seq_len, "tokens_per_s": summary, "raw": rows,
              "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="nano", help="Model preset (default nano).")
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per row (default 20).")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of all rows (default 3).")
    parser.add_argument("--seq-len", type=int, default=256, help="Sequence length (default 256).")
    parser.add_argument("--batch-size", type=int, default=4, help="Per-rank batch; the global batch is twice it.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-ddp-overhead")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "ddp_overhead.json")
    return parser.parse_args()


def run(name: str, args, shards: Path, tokenizer: Path, run_dir: Path) -> float:
    """One row once: its median tokens/s after warm-up."""
    ranks = 2 if name.endswith("2x1") else 1
    common = ["-m", "tempering", "pretrain", "--data", str(shards), "--tokenizer", str(tokenizer),
              "--preset", args.preset, "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
              f"training.effective_batch_size={args.batch_size * 2}", "--max-steps", str(args.steps),
              "--val-split", "0", "--precision", "fp32", "--save-dir", str(run_dir), "training.log_steps=1",
              "training.compile=false", "--restart"]
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // ranks), "OMP_WAIT_POLICY": "PASSIVE"}
    if name.startswith("active"):
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *common,
                   f"training.strategy={name.split('_')[0]}"]
    else:
        command = [sys.executable, *common]
    co_tenant = subprocess.Popen([sys.executable, "-c", CO_TENANT]) if name.endswith("shared") else None
    try:
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        if co_tenant is not None:
            co_tenant.kill()
            co_tenant.wait()
            time.sleep(1)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if r.get("split") == "train"][3:]
    return statistics.median(rates)


def markdown(report: dict) -> str:
    """The rows with tokens/s and the ratio to one process with two threads."""
    rates = report["tokens_per_s"]
    lines = [f"{report['preset']}, global batch {report['global_batch']} × {report['seq_len']}, {report['steps']} steps, "
             f"median of {report['rounds']} rounds (load average at the end: "
             f"{', '.join(f'{x:.1f}' for x in report['load_average_at_end'])})", "",
             "| row | tokens/s | vs single_2threads |", "|---|---|---|"]
    for name, value in rates.items():
        lines.append(f"| {name} | {value:,.0f} | {value / rates['single_2threads']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""What telemetry and the trackers cost per training step, as a share of a real `nano` step.

    python benchmarks/tracking_overhead.py [--steps 30] [--pairs 2] [--preset nano] [--seq-len 256] [--batch-size 8]
    python benchmarks/tracking_overhead.py --step-s 0.676   # costs only, against a given step time

1. The step: `temper pretrain` on the sample-corpus shards (no trackers), median step time.
2. The costs, measured in this process: the per-step data-wait timer, one telemetry record,
   and one record sent to TensorBoard, MLflow (sqlite) and W&B (offline).
3. The share of a step: (per-step cost + per-record cost × records per log line / log_steps) over
   the step time, plus MLflow's periodic flush over its interval; for the default log_steps=10
   and the worst case log_steps=1. The step time is the fastest run's (the most conservative).
4. End to end (`--pairs N`): runs with telemetry off and on (log_steps=1, a record every step),
   interleaved, median tokens/s of each. On a shared CPU this is noisier than the 1 % it checks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, add_model_arguments, prepare_shards

from tempering.tracking.backend import record_scalars
from tempering.tracking.telemetry import SystemTelemetry

TRAIN_RECORD = {"step": 1, "epoch": 0.01, "split": "train", "loss": 5.4321, "ppl": 228.6, "lr": 3e-4,
                "grad_norm": 0.71, "tokens_per_s": 3012.5, "tokens_seen": 204800, "time_s": 68.2}


def median_cost_s(action, repeats: int) -> float:
    """Median wall time of one call, over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timer_cost_s(repeats: int = 200_000) -> float:
    """Mean cost of one `fetching_data()` block (the per-step part of telemetry)."""
    telemetry = SystemTelemetry(torch.device("cpu"), every_steps=None)
    start = time.perf_counter()
    for _ in range(repeats):
        with telemetry.fetching_data():
            pass
    return (time.perf_counter() - start) / repeats


def backend_costs_s(work: Path, repeats: int = 200) -> dict[str, dict[str, float]]:
    """Per tracker: median cost of one train record, and (MLflow) of one flush of 10 s of log lines."""
    from tempering.config import load_config
    from tempering.tracking.fanout import RunIdentity, start_backend

    config = load_config(None, [f"run.save_dir={work / 'run'}"])
    (work / "run").mkdir(parents=True, exist_ok=True)
    costs = {}
    for name in ("tensorboard", "mlflow", "wandb"):
        try:
            backend = start_backend(name, config, work / "run", RunIdentity(config, "bench", {}), 1, None)
        except ImportError:
            continue
        steps = iter(range(1, 10**9))

        def send(b=backend, s=steps):
            b.write(*record_scalars({**TRAIN_RECORD, "step": next(s)}))

        costs[name] = {"record_s": median_cost_s(send, repeats), "flush_s": 0.0}
        if hasattr(backend, "flush"):  # MLflow queues records and sends them every FLUSH_INTERVAL_S
            flushes = []
            for _ in range(20):
                for _ in range(2 * 15):  # train + system records of 15 log lines
                    send()
                flushes.append(median_cost_s(backend.flush, 1))
                backend.wait()  # the write itself runs on MLflow's thread, off the training step
            costs[name]["flush_s"] = statistics.median(flushes)
        backend.close(completed=False, artifacts=[])
    return costs


def run_pretrain(shards: Path, tok: Path, save_dir: Path, args, extra: list[str]) -> dict:
    """One `temper pretrain` run; median tokens/s and step time over the steps after the first 3."""
    command = [sys.executable, "-m", "tempering", "pretrain", "--data", str(shards), "--tokenizer", str(tok),
               "--save-dir", str(save_dir), "--preset", args.preset, "--seq-len", str(args.seq_len),
               "--batch-size", str(args.batch_size), "--max-steps", str(args.steps), "--val-split", "0",
               "--restart", "--no-compile", "--lr-schedule", "constant", "training.log_steps=1", *extra]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in (save_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if r.get("split") == "train"][3:]
    tokens_per_s = statistics.median(speeds)
    return {"tokens_per_s": tokens_per_s, "step_s": args.batch_size * args.seq_len / tokens_per_s}


def main() -> None:
    """Measure, print a Markdown table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=2, help="end-to-end off/on run pairs (0 skips them)")
    parser.add_argument("--step-s", type=float, help="use this step time (s) instead of measuring one, e.g. 0.676 "
                        "for nano on a quiet 2-core CPU (README: 3,031 tokens/s); skips the training runs")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-bench")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tracking_overhead.json")
    args = parser.parse_args()
    shards, tok = (None, None) if args.step_s else prepare_shards(args.work, args.vocab_size, ("prose",))

    off_runs, on_runs = [], []
    for _ in range(0 if args.step_s else max(args.pairs, 1)):
        off_runs.append(run_pretrain(shards, tok, args.work / "overhead-off", args, ["tracking.telemetry_steps=0"]))
        if args.pairs:
            on_runs.append(run_pretrain(shards, tok, args.work / "overhead-on", args, []))
    # The least-disturbed run's step: other jobs on a shared CPU only make steps longer and shares smaller.
    step_s = args.step_s or min(r["step_s"] for r in off_runs + on_runs)
    timer_s = timer_cost_s()
    telemetry = SystemTelemetry(torch.device("cpu"), every_steps=None)
    record_s = median_cost_s(lambda: telemetry.record(1), 500)
    with tempfile.TemporaryDirectory() as scratch:
        backends = backend_costs_s(Path(scratch))
    from tempering.tracking.mlflow_backend import FLUSH_INTERVAL_S

    def share(per_step_s: float, per_log_s: float, per_interval_s: float, log_steps: int) -> float:
        return 100 * ((per_step_s + per_log_s / log_steps) / step_s + per_interval_s / FLUSH_INTERVAL_S)

    # (what, cost every step, cost per log line, cost per FLUSH_INTERVAL_S)
    rows = [("telemetry (timer every step + one record per log line)", timer_s, record_s, 0.0)]
    rows += [(f"{name}: train + system record per log line" + (f", one flush per {FLUSH_INTERVAL_S:g} s"
                                                               if cost["flush_s"] else ""),
              0.0, 2 * cost["record_s"], cost["flush_s"]) for name, cost in backends.items()]
    report = {"preset": args.preset, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "step_s": step_s, "timer_s": timer_s, "telemetry_record_s": record_s, "backend_costs_s": backends,
              "share_pct": {label: {"log_steps=10": share(a, b, c, 10), "log_steps=1": share(a, b, c, 1)}
                            for label, a, b, c in rows},
              "end_to_end": {"telemetry_off": off_runs, "telemetry_on": on_runs}}
    if on_runs:
        off = statistics.median(r["tokens_per_s"] for r in off_runs)
        on = statistics.median(r["tokens_per_s"] for r in on_runs)
        report["end_to_end"]["on_over_off"] = on / off
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{args.preset}, seq {args.seq_len}, batch {args.batch_size}: step {step_s * 1e3:.0f} ms "
          f"(fp32, eager; {'given with --step-s' if args.step_s else 'the fastest run' + chr(39) + 's median'})\n")
    print("| what | per step | per log line | per flush | share of a step, log_steps=10 | log_steps=1 |")
    print("|---|---|---|---|---|---|")
    for label, per_step, per_log, per_flush in rows:
        shares = report["share_pct"][label]
        print(f"| {label} | {per_step * 1e6:.2f} µs | {per_log * 1e3:.3f} ms | {per_flush * 1e3:.1f} ms "
              f"| {shares['log_steps=10']:.4f} % | {shares['log_steps=1']:.4f} % |")
    if on_runs:
        print(f"\nend to end, {len(on_runs)} interleaved pairs, a telemetry record every step: "
              f"{report['end_to_end']['on_over_off']:.3f}× the tokens/s of telemetry off "
              f"(off {[round(r['tokens_per_s']) for r in off_runs]}, on {[round(r['tokens_per_s']) for r in on_runs]})")


if __name__ == "__main__":
    main()

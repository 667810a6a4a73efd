"""Tempering against the tools a user would pick instead, on the same model, data and settings, in one run.

    python benchmarks/vs_peers.py [--rounds 3] [--steps 30] [--precision fp32 [bf16]] [--rows pretrain sft]
                                  [--smoke] [--out benchmarks/results/vs_peers.json]

Rows (each a separate process; rows run in turn A B C A B C ... for --rounds rounds):
  pretrain: `temper pretrain` | HF `Trainer` on `LlamaForCausalLM` | a hand-written loop over the HF model
  sft:      `temper sft` (packing) | TRL `SFTTrainer` with packing "bfd" | with packing "wrapped"
Same workload everywhere: preset `nano` exported as an HF LlamaConfig and initialised once
(the HF rows load that checkpoint; `temper pretrain` builds the same weights from the same
seed, checked with a zero-learning-rate run), the sample corpus's prose shards cut into the
same windows, the same chats, seq 256, batch 8, AdamW (same betas, eps, weight decay,
clipping) at a constant learning rate. Per row: median step time and tokens/s over the steps
after warm-up, MFU against the 2048² matmul rate of the row's precision (fp32, or bf16 for
bf16 rows) measured in this run (median of the measurements before, between and after the rounds), peak RSS of the process (wait4), time
from process start to the end of the first optimizer step, and ratios to Tempering's row.
Output: JSON (--out), a Markdown table on stdout and, unless --smoke or --no-docs, in
docs/performance.md. `--smoke` runs two steps per row, one round, and skips peers whose
packages (the `bench` extra) are absent; a row that cannot run says why instead of failing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import (
    REPO,
    cpu_stall_us,
    flops_per_token,
    machine_description,
    matmul_flops_per_s,
    prepare_shards,
    wait_for_quiet_cpu,
)
from peers.report import add_ratios, markdown, step_stats, summarise_row, targets, write_docs_block
from peers.workload import Workload, check_same_start, prepare_workload

BENCH_DIR = Path(__file__).resolve().parent
PRESET = "nano"
OPTIMIZER = {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 1.0}
POLL_S = 0.01


@dataclass(frozen=True)
class Row:
    """One contender: how to start it and what it needs installed."""

    name: str
    group: str  # "pretrain" | "sft"
    module: str | None = None  # peers.<runner>; None for Tempering's own CLI
    packages: tuple[str, ...] = ()
    options: dict = field(default_factory=dict, compare=False)  # names differ wherever options do

    @property
    def is_tempering(self) -> bool:
        """Whether this row runs the `temper` CLI."""
        return self.module is None


HF = ("transformers", "accelerate", "datasets")
ROWS = [
    Row("tempering", "pretrain"),
    Row("tempering --compile", "pretrain", options={"compile": True}),
    Row("hf-trainer", "pretrain", "peers.hf_trainer", HF),
    Row("hf-loop", "pretrain", "peers.hf_loop", ("transformers",)),
    Row("tempering", "sft"),
    # Rows twice as long, half as many: the same token slots per step, fuller rows (sft.pack_length).
    Row("tempering long-rows", "sft", options={"rows_per_pack": 2}),
    Row("trl-bfd", "sft", "peers.trl_sft", (*HF, "trl"), {"packing_strategy": "bfd"}),
    Row("trl-wrapped", "sft", "peers.trl_sft", (*HF, "trl"), {"packing_strategy": "wrapped"}),
]


def main() -> None:
    """Measure (or re-render --from-json), write the JSON, print the Markdown, put it into the docs."""
    args = parse_args()
    if args.from_json:
        report = json.loads(args.from_json.read_text())
    else:
        report = measure(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    print(table)
    if not (report["smoke"] or args.no_docs):
        write_docs_block(REPO / "docs" / "performance.md", report["tag"], table)


def measure(args) -> dict:
    """Prepare the workload, run every row for every round, and summarise."""
    args.work.mkdir(parents=True, exist_ok=True)
    workload = prepare_workload(args.work, prepare_shards, vocab_size=args.model_vocab_size,
                                seq_len=args.seq_len, seed=args.seed, chat_data=args.chat_data)
    rows = [(row, precision) for precision in args.precision for row in ROWS
            if row.group in args.rows and (args.with_compile or not row.options.get("compile"))]
    same_start = None if args.smoke else check_same_start(workload, pretrain_args(args, workload, "fp32"),
                                                          args.work / "runs" / "same-start")
    rates = {precision: [matmul_rate(precision, args)] for precision in dict.fromkeys(["fp32", *args.precision])}
    raw = {key(row, p): [] for row, p in rows}
    for round_index in range(args.rounds):
        for row, precision in rows:
            raw[key(row, precision)].append(run_when_available(row, precision, workload, args, round_index))
        for precision, measured in rates.items():
            measured.append(matmul_rate(precision, args))
    rate = {precision: statistics.median(measured) for precision, measured in rates.items()}
    per_token = flops_per_token(PRESET, workload.vocab_size, args.seq_len)
    summaries = {k: summarise_row(v, per_token, rate[k.rsplit("/", 1)[1]], args.max_cpu_pressure)
                 for k, v in raw.items()}
    add_ratios(summaries)
    return {
        "machine": machine_description(), "peer_versions": peer_versions(), "command": command_line(),
        "smoke": args.smoke, "tag": run_tag(args),
        "preset": PRESET, "vocab_size": workload.vocab_size, "seq_len": args.seq_len,
        "batch_size": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup, "rounds": args.rounds,
        "optimizer": OPTIMIZER, "flops_per_token": per_token, "matmul_flops_per_s": rates,
        "matmul_rate_used": rate, "same_start": same_start,
        "rows": summaries, "targets": {precision: targets(summaries, precision) for precision in args.precision},
        "raw": raw}


def matmul_rate(precision: str, args) -> float:
    """The 2048² GEMM rate in the row's compute dtype (bf16 autocast runs bf16 GEMMs)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return matmul_flops_per_s(repeats=args.matmul_repeats, dtype=dtype)


def run_when_available(row: Row, precision: str, workload: Workload, args, round_index: int) -> dict:
    """Run the row once in a quiet moment (again, up to --retries times, if other jobs took the CPU), or say why not."""
    why = unavailable(row)
    result = {"status": why}
    for attempt in range(1 + args.retries if why is None else 0):
        wait_for_quiet_cpu(args.quiet_wait_s, args.max_cpu_pressure)
        result = {**run_row(row, precision, workload, args, round_index), "attempt": attempt + 1}
        if result.get("cpu_pressure") is None or result["cpu_pressure"] <= args.max_cpu_pressure:
            break
    print(f"round {round_index + 1}/{args.rounds} {key(row, precision)}: "
          + (f"{result['tokens_per_s']:,.0f} tokens/s, CPU pressure {result.get('cpu_pressure') or 0:.0%}"
             if result.get("tokens_per_s") else result["status"]), flush=True)
    return result


def parse_args() -> argparse.Namespace:
    """Command-line options; --smoke overrides steps, rounds and warm-up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="Optimizer steps per row and round (>= 2).")
    parser.add_argument("--warmup", type=int, default=5, help="Step intervals left out of the median.")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument("--rows", nargs="+", choices=["pretrain", "sft"], default=["pretrain", "sft"])
    parser.add_argument("--with-compile", action="store_true", help="Add a `temper pretrain --compile` row.")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-vocab-size", type=int, default=None,
                        help="Model vocabulary (default: the 8192-token tokenizer's); e.g. 32000 for the RSS target.")
    parser.add_argument("--chat-data", type=Path, default=None,
                        help="`messages` JSONL for the SFT rows (default: chats made from pydoc topics).")
    parser.add_argument("--quiet-wait-s", type=float, default=300,
                        help="Before each row, wait up to this long for other jobs to leave the CPU free.")
    parser.add_argument("--max-cpu-pressure", type=float, default=0.15,
                        help="A row run during which tasks waited for a CPU more than this share of the time "
                             "(Linux PSI) counts as disturbed by other jobs and is re-run.")
    parser.add_argument("--retries", type=int, default=2, help="Re-runs of a disturbed row run.")
    parser.add_argument("--smoke", action="store_true", help="Two steps per row, one round (CI).")
    parser.add_argument("--no-docs", action="store_true", help="Do not write the table into docs/performance.md.")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="Re-render the table (and docs block) of an earlier run's JSON instead of measuring.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-vs-peers")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default benchmarks/results/vs_peers_<precisions>-<rows>[-vocabN].json).")
    args = parser.parse_args()
    args.matmul_repeats = 10
    args.out = args.out or BENCH_DIR / "results" / f"vs_peers_{'smoke' if args.smoke else run_tag(args)}.json"
    if args.smoke:
        args.steps, args.rounds, args.warmup, args.matmul_repeats, args.quiet_wait_s, args.retries = 2, 1, 0, 2, 0, 0
    if args.steps < 2:
        parser.error("--steps must be at least 2 (step times are intervals between steps)")
    return args


def run_tag(args) -> str:
    """What this run measured, e.g. fp32-pretrain-sft or fp32-pretrain-vocab32000: names its JSON and docs block."""
    return "-".join([*args.precision, *args.rows]) + (f"-vocab{args.model_vocab_size}" if args.model_vocab_size else "")


def key(row: Row, precision: str) -> str:
    """The row's name in the results: group/name/precision."""
    return f"{row.group}/{row.name}/{precision}"


@functools.cache
def unavailable(row: Row) -> str | None:
    """Why the row cannot run here, or None."""
    missing = [name for name in row.packages if importlib.util.find_spec(name) is None]
    if missing:
        return f"skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')"
    if row.is_tempering and row.group == "sft" and not temper_has("sft"):
        return "not available yet: this temper has no `sft` command"
    return None


@functools.cache
def temper_has(command: str) -> bool:
    """Whether `temper COMMAND --help` succeeds."""
    return subprocess.run([sys.executable, "-m", "tempering", command, "--help"],
                          capture_output=True).returncode == 0


def pretrain_args(args, workload: Workload, precision: str) -> list[str]:
    """`temper pretrain` arguments for the workload, save dir excluded."""
    extra = [f"model.vocab_size={args.model_vocab_size}"] if args.model_vocab_size else []
    return ["--data", str(workload.shards), "--tokenizer", str(workload.tokenizer), "--preset", PRESET,
            "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--val-split", "0",
            "--seed", str(args.seed), *common_temper_args(precision), *extra]


def common_temper_args(precision: str) -> list[str]:
    """Optimizer, schedule, precision and logging flags both temper commands take."""
    return ["--lr", str(OPTIMIZER["lr"]), "--lr-schedule", "constant", "--warmup-steps", "0",
            "--wd", str(OPTIMIZER["weight_decay"]), "--precision", precision,
            f"training.adam_beta1={OPTIMIZER['betas'][0]}", f"training.adam_beta2={OPTIMIZER['betas'][1]}",
            f"training.adam_eps={OPTIMIZER['eps']}", f"training.grad_clip={OPTIMIZER['grad_clip']}",
            "training.log_steps=1"]


def row_command(row: Row, precision: str, workload: Workload, args, run_dir: Path) -> list[str]:
    """The command line that runs `row` once, writing into `run_dir`."""
    if row.is_tempering and row.group == "pretrain":
        return [sys.executable, "-m", "tempering", "pretrain", *pretrain_args(args, workload, precision),
                "--save-dir", str(run_dir / "run"), "--max-steps", str(args.steps),
                *(["--compile"] if row.options.get("compile") else [])]
    if row.is_tempering:
        merge = row.options.get("rows_per_pack", 1)
        return [sys.executable, "-m", "tempering", "sft", "--checkpoint", str(workload.checkpoint),
                "--data", str(workload.chat_data), "--save-dir", str(run_dir / "run"),
                "--max-steps", str(args.steps), "--batch-size", str(max(1, args.batch_size // merge)),
                "--seq-len", str(args.seq_len), "--pack-length", str(args.seq_len * merge),
                "--val-split", "0", "--seed", str(args.seed), *common_temper_args(precision)]
    spec = {**OPTIMIZER, **row.options, "steps": args.steps, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "seed": args.seed, "precision": precision,
            "checkpoint": str(workload.checkpoint), "tokenizer": str(workload.tokenizer),
            "windows": str(workload.windows), "chat_data": str(workload.chat_data),
            "chat_template": workload.chat_template, "out_dir": str(run_dir / "out")}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return [sys.executable, "-m", row.module, str(run_dir / "spec.json")]


def run_row(row: Row, precision: str, workload: Workload, args, round_index: int) -> dict:
    """Run one row once as a child process; return its step statistics, peak RSS and time to first step."""
    run_dir = args.work / "runs" / f"{key(row, precision).replace('/', '_').replace(' ', '')}-{round_index}"
    shutil.rmtree(run_dir, ignore_errors=True)  # our own scratch space from an earlier round or run
    run_dir.mkdir(parents=True)
    command = row_command(row, precision, workload, args, run_dir)
    metrics_file = run_dir / "run" / "metrics.jsonl" if row.is_tempering else None
    child = run_child(command, child_env(args.work), run_dir / "stderr.txt", metrics_file)
    if child["returncode"] != 0:
        tail = (run_dir / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:]
        return {"status": f"failed (exit {child['returncode']}): {' | '.join(tail)[-300:]}"}
    if row.is_tempering:
        step_end_s, step_tokens = temper_steps(metrics_file)
    else:
        done = next((r for r in child["events"] if r.get("event") == "done"), {})
        step_end_s, step_tokens = done.get("step_end_s", []), done.get("step_tokens", [])
    stats = step_stats(step_end_s, step_tokens, args.warmup)
    if stats is None:
        return {"status": "failed: no step times reported"}
    return {"status": "ok", **stats, "peak_rss_mb": child["peak_rss_mb"], "wall_s": child["wall_s"],
            "time_to_first_step_s": child["time_to_first_step_s"], "num_steps": len(step_end_s),
            "cpu_pressure": child["cpu_pressure"]}


def run_child(command: list[str], env: dict, stderr_file: Path, metrics_file: Path | None) -> dict:
    """Start `command`, watch for its first optimizer step, and reap it with its own rusage.

    The first step is the child's `first_step` JSON line (its own clock), or for `temper`
    the moment its metrics.jsonl gains the first train record (polled every POLL_S).
    """
    started, stall_before_us = time.time(), cpu_stall_us()
    with open(stderr_file, "w") as stderr, tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, text=True)
        first_step_at = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if first_step_at is None and metrics_file is not None and first_train_record(metrics_file):
                first_step_at = time.time()
            if pid:
                break
            time.sleep(POLL_S)
        wall_s, stall_after_us = time.time() - started, cpu_stall_us()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        stdout.seek(0)
        events = [json.loads(line) for line in stdout if line.startswith('{"event"')]
    first = next((r["unix_time"] for r in events if r.get("event") == "first_step"), first_step_at)
    return {"returncode": process.returncode, "events": events, "wall_s": wall_s,
            "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
            "cpu_s": usage.ru_utime + usage.ru_stime,  # the child's own CPU time, start-up included
            "time_to_first_step_s": None if first is None else first - started,
            "cpu_pressure": None if stall_before_us is None else (stall_after_us - stall_before_us) / (wall_s * 1e6)}


def first_train_record(metrics_file: Path) -> bool:
    """Whether metrics.jsonl already holds a complete train record."""
    try:
        text = metrics_file.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(_is_train_record(line) for line in text.splitlines(keepends=True) if line.endswith("\n"))


def _is_train_record(line: str) -> bool:
    try:
        return json.loads(line).get("split") == "train"
    except ValueError:
        return False


def temper_steps(metrics_file: Path) -> tuple[list[float], list[int]]:
    """Finish times (s since loop start) and tokens of each step, from train records logged every step."""
    records = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line]
    train = [r for r in records if r.get("split") == "train"]
    seen = [0] + [r["tokens_seen"] for r in train]
    return [r["time_s"] for r in train], [b - a for a, b in zip(seen, seen[1:], strict=False)]


def child_env(work: Path) -> dict:
    """The children's environment: peers importable, Hugging Face kept offline and inside the work dir."""
    path = os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HOME": str(work / "hf-home"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}


def peer_versions() -> str:
    """Installed versions of the peers' packages."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("transformers", "trl", "accelerate", "datasets"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def command_line() -> str:
    """This run's command, as typed from the repo root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return " ".join(["python", str(shown), *map(shlex.quote, sys.argv[1:])])


if __name__ == "__main__":
    main()

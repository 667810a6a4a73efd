"""The GPU suite: tokens/s and MFU of Tempering against HF `Trainer`, on a ~125M and a ~1B Llama, in one command.

    bash benchmarks/gpu_suite.sh                       # on a CUDA machine with the project installed
    python benchmarks/gpu_suite.py [--models 125m 1b] [--steps 30] [--out results/gpu_suite.json]
    python benchmarks/gpu_suite.py --smoke --device cpu  # the report path on a CPU with the tiny preset (CI)

Rows per model (each its own process, bf16 autocast / bf16 mixed precision, SDPA attention —
flash attention where the GPU has it): `temper pretrain` eager and `--compile`; HF `Trainer` on
`LlamaForCausalLM` (attn_implementation="sdpa") eager and `torch_compile=True`; `temper pretrain`
under `torchrun --nproc-per-node 1` with `training.strategy=fsdp` (FSDP2's cost on one rank).
Per row: median tokens/s over the steps after warm-up, and MFU = tokens/s × training FLOPs per
token ÷ the GPU's bf16 peak, measured here as the best rate of a large bf16 matmul. Writes the
JSON to --out and a Markdown table to stdout. Never run in CI except as --smoke on CPU.
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

import torch

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import flops_per_token_of, machine_description, prepare_shards  # noqa: E402

VOCAB = 32000
# Llama-style shapes at a 32k vocabulary: ~134M and ~1.1B parameters (counted in the report).
MODELS = {
    "125m": {"preset": "small", "overrides": {"d_model": 768, "n_layers": 12, "n_heads": 12, "n_kv_heads": 12,
                                              "d_ff": 2048, "vocab_size": VOCAB, "max_seq_len": 2048},
             "seq_len": 2048, "batch_size": 8},
    "1b": {"preset": "small", "overrides": {"d_model": 2048, "n_layers": 16, "n_heads": 16, "n_kv_heads": 8,
                                            "d_ff": 8192, "vocab_size": VOCAB, "max_seq_len": 2048},
           "seq_len": 2048, "batch_size": 4},
    "tiny": {"preset": "tiny", "overrides": {}, "seq_len": 32, "batch_size": 4},  # --smoke on CPU
}
ROWS = ("temper", "temper_compiled", "hf_trainer", "hf_trainer_compiled", "temper_fsdp_1rank")


def main() -> None:
    """Run the suite (or, with --hf-row, one HF Trainer row in this process)."""
    args = parse_args()
    if args.hf_row:
        return hf_row(json.loads(Path(args.hf_row).read_text()))
    report = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["125m", "1b"], choices=sorted(MODELS),
                        help="Model sizes to measure (default: 125m 1b).")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="Rows to run (default: all).")
    parser.add_argument("--steps", type=int, default=30, help="Optimizer steps per row (default 30).")
    parser.add_argument("--warmup", type=int, default=10, help="Steps left out of the medians (default 10).")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="Where to train (default cuda).")
    parser.add_argument("--smoke", action="store_true",
                        help="The tiny preset, 4 steps, no compiled rows: checks the suite runs (CPU is fine).")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-gpu-suite",
                        help="Scratch folder for data and runs.")
    parser.add_argument("--out", type=Path, default=Path("results/gpu_suite.json"), help="JSON report path.")
    parser.add_argument("--hf-row", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.models, args.steps, args.warmup = ["tiny"], 4, 1
        args.rows = [row for row in args.rows if "compiled" not in row]
    if args.device == "cuda" and not torch.cuda.is_available() and not args.hf_row:
        parser.error("no CUDA device here: run on a GPU machine, or use --smoke --device cpu to check the suite")
    return args


def measure(args) -> dict:
    """Peak rate, then every row of every model; a row that fails records why instead of stopping the suite."""
    args.work.mkdir(parents=True, exist_ok=True)
    shards, tokenizer = prepare_shards(args.work, vocab_size=512 if args.smoke else 8192)
    peak = peak_flops(args.device)
    started = time.time()
    models = {}
    for name in args.models:
        spec = MODELS[name]
        arch = architecture(spec)
        per_token = flops_per_token_of(arch, spec["seq_len"])
        rows = {}
        for row in args.rows:
            run_dir = args.work / "runs" / f"{name}-{row}-{int(time.time())}"
            try:
                steps = run_row(row, spec, arch, args, shards, tokenizer, run_dir)
                rows[row] = summarise(steps, args.warmup, per_token, peak)
            except RowFailed as failure:
                rows[row] = {"error": str(failure)}
        models[name] = {"parameters": parameter_count(arch), "seq_len": spec["seq_len"],
                        "batch_size": spec["batch_size"], "flops_per_token": per_token, "rows": rows}
    return {"machine": machine_description(), "device": device_name(args.device), "torch": torch.__version__,
            "peak_bf16_flops_per_s": peak, "steps": args.steps, "warmup": args.warmup, "smoke": args.smoke,
            "wall_time_s": round(time.time() - started, 1), "models": models}


class RowFailed(Exception):
    """A row could not run (its command failed); the report says why."""


def run_row(row: str, spec: dict, arch, args, shards: Path, tokenizer: Path, run_dir: Path) -> list[dict]:
    """Run one row; return its per-step records (tokens, seconds)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    precision = "bf16" if args.device == "cuda" else "fp32"
    if row.startswith("hf_trainer"):
        hf_spec = {"hf_config": hf_config(arch), "steps": args.steps, "seq_len": spec["seq_len"],
                   "batch_size": spec["batch_size"], "precision": precision, "device": args.device,
                   "compile": row.endswith("compiled"), "out": str(run_dir / "steps.json")}
        (run_dir / "spec.json").write_text(json.dumps(hf_spec))
        command = [sys.executable, str(Path(__file__).resolve()), "--hf-row", str(run_dir / "spec.json")]
        _run(command, run_dir)
        return json.loads((run_dir / "steps.json").read_text())
    overrides = [f"model.{key}={value}" for key, value in spec["overrides"].items()]
    temper = ["-m", "tempering", "pretrain", "--data", str(shards), "--tokenizer", str(tokenizer),
              "--preset", spec["preset"], *overrides, "--seq-len", str(spec["seq_len"]),
              "--batch-size", str(spec["batch_size"]), "--max-steps", str(args.steps), "--val-split", "0",
              "--precision", precision, "--save-dir", str(run_dir / "run"), f"training.device={args.device}",
              "training.log_steps=1", "training.lr_schedule=constant", "training.warmup_steps=0",
              f"training.compile={'true' if row == 'temper_compiled' else 'false'}"]
    if row == "temper_fsdp_1rank":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                   *temper[:], "training.strategy=fsdp"]
    else:
        command = [sys.executable, *temper]
    _run(command, run_dir)
    return temper_steps(run_dir / "run" / "metrics.jsonl")


def _run(command: list[str], run_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")])}
    with open(run_dir / "output.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = (run_dir / "output.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RowFailed(f"exit {result.returncode}: {tail[0][:200]} (log: {run_dir / 'output.log'})")


def temper_steps(metrics_file: Path) -> list[dict]:
    """Per-step (tokens, seconds) from a temper run's metrics.jsonl (time_s is cumulative)."""
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    steps, previous_time, previous_tokens = [], 0.0, 0
    for record in train:
        steps.append({"tokens": record["tokens_seen"] - previous_tokens, "seconds": record["time_s"] - previous_time})
        previous_time, previous_tokens = record["time_s"], record["tokens_seen"]
    return steps


def summarise(steps: list[dict], warmup: int, flops_per_token: float, peak: float) -> dict:
    """Median tokens/s over the steps after warm-up, and the MFU it means."""
    measured = [s["tokens"] / s["seconds"] for s in steps[warmup:] if s["seconds"] > 0] or \
        [s["tokens"] / s["seconds"] for s in steps if s["seconds"] > 0]
    if not measured:
        raise RowFailed("no timed steps")
    tokens_per_s = statistics.median(measured)
    return {"tokens_per_s": round(tokens_per_s, 1), "mfu": round(tokens_per_s * flops_per_token / peak, 4),
            "steps_timed": len(measured)}


def hf_row(spec: dict) -> None:
    """HF Trainer on LlamaForCausalLM (SDPA) over random windows, timing each optimizer step."""
    from datasets import Dataset
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    config = LlamaConfig(**spec["hf_config"], attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    windows = torch.randint(0, config.vocab_size, (spec["steps"] * spec["batch_size"], spec["seq_len"]),
                            generator=generator).tolist()
    dataset = Dataset.from_dict({"input_ids": windows, "labels": windows}).with_format("torch")
    args = TrainingArguments(output_dir=str(Path(spec["out"]).parent / "hf"), max_steps=spec["steps"],
                             per_device_train_batch_size=spec["batch_size"], learning_rate=3e-4,
                             lr_scheduler_type="constant", bf16=spec["precision"] == "bf16",
                             torch_compile=spec["compile"], use_cpu=spec["device"] == "cpu", report_to="none",
                             save_strategy="no", dataloader_num_workers=0, logging_strategy="no")
    start = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[StepTimes()]).train()
    tokens = spec["batch_size"] * spec["seq_len"]
    ends = [start, *times]
    steps = [{"tokens": tokens, "seconds": ends[i + 1] - ends[i]} for i in range(len(times))]
    Path(spec["out"]).write_text(json.dumps(steps))


def architecture(spec: dict):
    """The Tempering architecture of a suite model."""
    from tempering.models.registry import find_preset

    return find_preset(spec["preset"])[1].with_overrides(**spec["overrides"])


def hf_config(arch) -> dict:
    """The transformers LlamaConfig fields for `arch` (Tempering's own translation)."""
    from tempering.models.family import SpecialTokenIds
    from tempering.models.registry import get_family

    config = get_family("llama").to_hf_config(arch, dropout=0.0, special=SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0))
    return {k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype",
                                                         "transformers_version")}


def parameter_count(arch) -> int:
    from tempering.models.registry import get_family

    return get_family("llama").count_parameters(arch)


def peak_flops(device: str) -> float:
    """Best measured rate of a bf16 matmul (8192² on a GPU; fp32 1024² on CPU, for --smoke)."""
    if device == "cpu":
        size, dtype, repeats = 1024, torch.float32, 5
    else:
        size, dtype, repeats = 8192, torch.bfloat16, 20
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = 0.0
    for _ in range(4):
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        _sync(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def markdown(report: dict) -> str:
    """One table: a line per (model, row) with tokens/s, MFU and the ratio to `temper` eager."""
    lines = [f"GPU suite on {report['device']} (torch {report['torch']}), matmul peak "
             f"{report['peak_bf16_flops_per_s'] / 1e12:.2f} TFLOP/s measured, {report['steps']} steps per row, "
             f"{report['wall_time_s']:.0f} s in all", "",
             "| model | params | row | tokens/s | MFU | vs temper |", "|---|---|---|---|---|---|"]
    for name, model in report["models"].items():
        base = model["rows"].get("temper", {}).get("tokens_per_s")
        for row, result in model["rows"].items():
            if "error" in result:
                lines.append(f"| {name} | {model['parameters'] / 1e6:.3g}M | {row} | failed: {result['error']} | | |")
                continue
            ratio = f"{result['tokens_per_s'] / base:.2f}x" if base else "-"
            lines.append(f"| {name} | {model['parameters'] / 1e6:.3g}M | {row} | {result['tokens_per_s']:,.0f} | "
                         f"{result['mfu'] * 100:.1f} % | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

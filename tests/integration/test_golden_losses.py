"""Golden losses: the first 20 training losses of `tiny` on the built-in sample corpus never change by accident.

Every refactor of the engine (model, loss, optimizer, data order, loop) must leave these numbers
alone: the test reruns the recorded pipeline through the real CLI (fp32, CPU, fixed seed) and
compares each loss to 1e-6 relative. When a change is *meant* to alter training, regenerate the
file on purpose and say why in the commit:

    .venv/bin/python -m tests.integration.test_golden_losses --write

The numbers depend on the torch build, the Python version (the sample corpus is read from the
standard library) and the CPU's vector instructions, so the file keeps one record per setup (`--write`
adds or replaces this machine's) and the test skips, naming what differs, on a setup it has none for.
A new setup's record is written from code whose losses equal an existing record's to the tolerance,
or from the commit before a change under test (say which in the commit message).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tempering.tracking.metrics import read_metrics
from tests.conftest import REPO_ROOT, run_temper

GOLDEN_FILE = REPO_ROOT / "tests" / "golden" / "tiny_sample_losses.json"
NUM_STEPS = 20
RELATIVE_TOLERANCE = 1e-6
# CPU features that select different fp32 GEMM kernels (and so different rounding).
KERNEL_FLAGS = ("avx2", "avx512f", "amx_tile")
PRETRAIN_ARGS = ["--preset", "tiny", "--seq-len", "64", "--batch-size", "4", "--lr", "3e-3", "--warmup-steps", "5",
                 "--max-steps", str(NUM_STEPS), "--seed", "1234", "--precision", "fp32", "--device", "cpu",
                 "--no-compile", "training.log_steps=1", "training.eval_max_batches=2"]


def machine() -> dict:
    """What the losses depend on besides the code: torch, Python, CPU kernel family, threads."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        present = set(flags.partition(":")[2].split())
    except (OSError, StopIteration):
        present = set()
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_kernel_flags": [flag for flag in KERNEL_FLAGS if flag in present]}


def golden_losses(root: Path) -> list[float]:
    """Run sample corpus → tokenizer → prep → pretrain through the CLI; return the per-step train losses."""
    env = {"OMP_NUM_THREADS": "2"}  # thread count changes reduction order; fix it
    run_temper("sample-corpus", "--output", root / "corpus", check=True, env=env)
    run_temper("tokenizer", "train", "--input", root / "corpus" / "prose" / "train.jsonl", "--vocab-size", 512,
               "--output", root / "tok", check=True, env=env)
    run_temper("prep", "--input", root / "corpus" / "prose", "--tokenizer", root / "tok", "--output", root / "shards",
               "--val-fraction", 0.05, "--seq-len", 64, check=True, env=env)
    run_temper("pretrain", "--data", root / "shards", "--tokenizer", root / "tok", "--save-dir", root / "run",
               *PRETRAIN_ARGS, check=True, env=env)
    records = [r for r in read_metrics(root / "run" / "metrics.jsonl") if r.get("split") == "train"]
    assert [r["step"] for r in records] == list(range(1, NUM_STEPS + 1))
    return [r["loss"] for r in records]


def recorded_setups() -> list[dict]:
    """The golden file's records, each {"machine": ..., "losses": [...]}."""
    return json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))["setups"]


def test_first_twenty_losses_match_the_golden_file(tmp_path):
    here = machine()
    matching = [setup for setup in recorded_setups() if setup["machine"] == here]
    if not matching:
        seen = [setup["machine"] for setup in recorded_setups()]
        pytest.skip(f"no golden losses recorded for this setup ({here}; recorded: {seen}); record them with "
                    "`python -m tests.integration.test_golden_losses --write` from unchanged code")
    golden = matching[0]["losses"]
    losses = golden_losses(tmp_path)
    assert len(losses) == len(golden) == NUM_STEPS
    for step, (got, want) in enumerate(zip(losses, golden, strict=True), 1):
        assert got == pytest.approx(want, rel=RELATIVE_TOLERANCE), f"step {step}: loss {got!r}, golden {want!r}"


def main() -> None:
    """Regenerate the golden file (a deliberate act: commit it with the reason training changed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help=f"Add (or replace) this setup's record in {GOLDEN_FILE.relative_to(REPO_ROOT)}.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        losses = golden_losses(Path(work))
    record = {"machine": machine(), "losses": losses}
    print(json.dumps(record, indent=2))
    if args.write:
        others = [s for s in recorded_setups() if s["machine"] != record["machine"]] if GOLDEN_FILE.exists() else []
        golden = {"description": "train loss of steps 1-20: temper pretrain " + " ".join(PRETRAIN_ARGS)
                  + " on the sample corpus's prose (tokenizer vocab 512, prep --val-fraction 0.05), per setup",
                  "setups": [*others, record]}
        GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN_FILE.write_text(json.dumps(golden, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {GOLDEN_FILE}", file=sys.stderr)


if __name__ == "__main__":
    main()

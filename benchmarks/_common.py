"""What the benchmark scripts share: the matmul rate, FLOPs per token, the sample-corpus shards, the machine.

Imported by `train_throughput.py`, `profile_step.py` and `vs_peers.py` (both run as scripts from this folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from tempering.models.registry import find_preset

REPO = Path(__file__).resolve().parents[1]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and batch shape options the single-run benchmarks share."""
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)


def matmul_flops_per_s(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-3 GEMM rate on size × size matrices of `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        rates.append(2 * size**3 * repeats / (time.perf_counter() - start))
    return max(rates)


def flops_per_token(preset: str, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·N (matmul parameters) + 12·L·d·T (attention)."""
    return flops_per_token_of(find_preset(preset)[1].with_overrides(vocab_size=vocab_size), seq_len)


def flops_per_token_of(arch, seq_len: int) -> float:
    """Training FLOPs per token of a Llama-style architecture: 6·N (matmul parameters) + 12·L·d·T (attention)."""
    head_dim = arch.head_dim
    per_layer = arch.d_model * head_dim * (2 * arch.n_heads + 2 * arch.n_kv_heads) + 3 * arch.d_model * arch.d_ff
    matmul_params = arch.n_layers * per_layer + arch.vocab_size * arch.d_model  # + output head
    return 6 * matmul_params + 12 * arch.n_layers * arch.d_model * seq_len


def temper(*args) -> None:
    """Run a temper command, failing loudly."""
    subprocess.run([sys.executable, "-m", "tempering", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL)


def prepare_shards(work: Path, vocab_size: int, domains: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Sample corpus → tokenizer → shards (of `domains`, default all), reused when already there."""
    name = "-".join(domains) if domains else "all"
    shards, tok = work / f"shards-{name}-{vocab_size}", work / f"tok-{name}-{vocab_size}"
    if not (work / "corpus").is_dir():
        temper("sample-corpus", "--output", work / "corpus")
    # The text domains only: corpus/chat holds chat records (no "text" field), not documents.
    inputs = [work / "corpus" / d for d in (domains or ("prose", "code"))]
    if not (tok / "tokenizer.json").exists():
        temper("tokenizer", "train", "--input", *inputs, "--vocab-size", vocab_size, "--output", tok, "--overwrite")
    if not (shards / "manifest.json").exists():
        temper("prep", "--input", *inputs, "--tokenizer", tok, "--output", shards)
    return shards, tok


def cpuinfo_lines() -> list[str]:
    """Lines of /proc/cpuinfo (empty where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's guess elsewhere)."""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo_lines() if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())


def machine_description() -> dict:
    """CPU, core count, torch version and thread count of this machine."""
    flags = next((line.split() for line in cpuinfo_lines() if line.startswith("flags")), [])
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def cpu_stall_us() -> int | None:
    """Microseconds some runnable task has waited for a CPU since boot (Linux PSI), or None."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(some.split("total=")[1])


def wait_for_quiet_cpu(timeout_s: float, threshold: float, probe_s: float = 2.0) -> float | None:
    """Wait (up to timeout_s) until tasks wait for a CPU less than `threshold` of the time; return that share.

    On a shared machine a co-tenant makes torch's OpenMP threads wait at every barrier, which
    slows a step several-fold, so timings start only in quiet moments.
    """
    deadline = time.time() + timeout_s
    while True:
        before = cpu_stall_us()
        if before is None:
            return None
        time.sleep(probe_s)
        pressure = (cpu_stall_us() - before) / (probe_s * 1e6)
        if pressure <= threshold or time.time() >= deadline:
            return pressure

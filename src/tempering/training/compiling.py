"""Whether to `torch.compile` the training step, and a compiled step that falls back to eager.

`training.compile: auto` compiles only where it pays: fixed-shape training (pretraining,
post-training) of at least AUTO_MIN_STEPS steps, on CPU or CUDA, with a C++ compiler on
the PATH for CPU (Inductor needs one). On this project's 2-core benchmark machine
compiling costs 6-20 s before the first step and saves ~0.05 s a step (docs/performance.md),
so short runs and tests stay eager. Compiled kernels are cached under the Tempering cache
directory, so a second run with the same shapes starts faster. A compile failure (no
compiler, an unsupported op) prints one warning and the run continues eagerly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tempering.tracking.console import console

AUTO_MIN_STEPS = 1000
_COMPILE_ERROR_MODULES = ("torch._dynamo", "torch._inductor")


def should_compile(setting: bool | str, *, total_steps: int, static_shapes: bool, device: torch.device) -> bool:
    """Resolve training.compile (true / false / "auto") for this run."""
    if setting != "auto":
        return bool(setting)
    if not static_shapes or total_steps < AUTO_MIN_STEPS or device.type not in ("cpu", "cuda"):
        return False
    return device.type != "cpu" or any(shutil.which(name) for name in ("c++", "g++", "clang++"))


def compiled_step(objective: Callable, cache_dir: Path) -> Callable:
    """`torch.compile(objective)`, switching to `objective` for good at the first compile error."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
    compiled = torch.compile(objective)
    current = compiled

    def step(*args, **kwargs):
        nonlocal current
        if current is objective:
            return objective(*args, **kwargs)
        try:
            return current(*args, **kwargs)
        except Exception as exc:
            if not is_compile_error(exc):
                raise
            console.print(f"[yellow]warning: torch.compile failed ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}); "
                          "training continues without compiling (training.compile=false hides this)[/yellow]")
            current = objective
            return objective(*args, **kwargs)

    return step


def is_compile_error(exc: BaseException) -> bool:
    """Whether `exc` comes from Dynamo or Inductor rather than from the model or data."""
    return type(exc).__module__.startswith(_COMPILE_ERROR_MODULES)

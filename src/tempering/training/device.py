"""Device choice and the autocast context for the configured precision."""

from __future__ import annotations

import contextlib

import torch

from tempering.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(requested: str) -> torch.device:
    """cuda, then mps, then cpu for "auto"; an explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device is cuda but no CUDA device is available (use training.device=auto)")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UserError("training.device is mps but MPS is not available (use training.device=auto)")
    return torch.device(requested)


def autocast(device: torch.device, precision: str):
    """Autocast context for bf16/fp16; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise UserError("training.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])

"""Optionally pin glibc's mmap threshold so memory a training step frees goes back to the system.

glibc serves a large allocation with its own `mmap` and unmaps it on free, but every time such a
block is freed it raises the threshold to that block's size (up to 32 MB). From then on tensors of
that size come from the heap, and a heap fragmented by the next step's tensors cannot shrink: the
resident size of a training process climbs for several steps and stays ~600 MB above what its live
tensors need (measured on LoRA and MoE steps, docs/performance.md). Fixing the threshold turns the
dynamic adjustment off. No library does this; it is one `mallopt` call through ctypes.

It is off by default because it costs time: every large tensor is then a fresh mapping whose pages
fault in on first touch, and a CPU training step of the `small` preset took 1.6-1.9x as long
(docs/performance.md, "Mixture of experts and LoRA"). `TEMPERING_MMAP_THRESHOLD=131072` (bytes)
turns it on, for a run that must fit in memory more than it must be fast; unset or 0 leaves glibc's
own behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from tempering.errors import UserError

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
SUGGESTED_THRESHOLD = 128 * 1024  # glibc's initial value, the one to pin
ENV = "TEMPERING_MMAP_THRESHOLD"


def threshold_from_env(environ: dict | None = None) -> int:
    """The threshold to pin, in bytes, from TEMPERING_MMAP_THRESHOLD (unset or 0: leave glibc's default)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return 0
    try:
        threshold = int(value)
    except ValueError:
        threshold = -1
    if threshold < 0:
        raise UserError(f"{ENV}={value!r}: give a size in bytes (e.g. 131072), or 0 to keep glibc's own threshold")
    return threshold


def pin_mmap_threshold(environ: dict | None = None) -> bool:
    """Fix glibc's mmap threshold if TEMPERING_MMAP_THRESHOLD asks (module docstring); True if it was set."""
    threshold = threshold_from_env(environ)
    if threshold == 0 or not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))

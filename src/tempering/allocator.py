"""glibc's heap: optionally pin its mmap threshold (training steps), and hand free pages back after a phase (prep);
and a bound on oneDNN's per-shape primitive cache.

glibc serves a large allocation with its own `mmap` and unmaps it on free, but every time such a
block is freed it raises the threshold to that block's size (up to 32 MB). From then on tensors of
that size come from the heap, and a heap fragmented by the next step's tensors cannot shrink: the
resident size of a training process climbs for several steps and stays ~600 MB above what its live
tensors need (measured on LoRA and MoE steps, docs/performance.md). Fixing the threshold turns the
dynamic adjustment off. No library does this; it is one `mallopt` call through ctypes.

It is off by default because it costs time: every large tensor is then a fresh mapping whose pages
fault in on first touch; at 131072 a CPU training step of the `small` preset took 1.6-1.9x as long
(docs/performance.md, "Mixture of experts and LoRA"). `TEMPERING_MMAP_THRESHOLD=BYTES` turns
it on, for a run that must fit in memory more than it must be fast (4194304 costs far less than
131072 and keeps most of the LoRA saving; docs/performance.md); unset or 0 leaves glibc's own behaviour.

oneDNN (torch's CPU kernels for bf16 matmuls and convolutions) keeps every primitive it JIT-compiles,
scratch buffers included, in a cache of up to 1,024 entries keyed by shape. Batches of variable
length (speech, unpadded token batches) make new shapes every step, so that cache alone grew a speech
training process by gigabytes; `temper` caps it at 64 unless ONEDNN_PRIMITIVE_CACHE_CAPACITY is set.
A dense model's step uses fewer shapes than that (the `small` preset in bf16: the same peak and speed
at 16, 64 and 256). An MoE step makes one shape per expert slice: `moe_nano` in bf16 peaked ~140 MB
lower at 64 than at 256 for the same CPU time; at 16 captioning (variable caption lengths) took ~7 %
more CPU, at 64 within the noise (docs/performance.md, "oneDNN's cache").
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
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 64  # oneDNN's default is 1024


def bound_onednn_cache(environ: dict | None = None) -> None:
    """Cap oneDNN's primitive cache at ONEDNN_CACHE_CAPACITY unless the user chose a capacity (before torch runs)."""
    (os.environ if environ is None else environ).setdefault(ONEDNN_CACHE_ENV, str(ONEDNN_CACHE_CAPACITY))


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


def _glibc_function(name: str):
    """The C library's function `name`, or None off Linux or where the C library has none (musl)."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        return getattr(ctypes.CDLL(libc_name), name)
    except (OSError, AttributeError):
        return None


def pin_mmap_threshold(environ: dict | None = None) -> bool:
    """Fix glibc's mmap threshold if TEMPERING_MMAP_THRESHOLD asks (module docstring); True if it was set."""
    threshold = threshold_from_env(environ)
    mallopt = _glibc_function("mallopt") if threshold else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> bool:
    """Hand the free pages of glibc's heaps back to the system (`malloc_trim(0)`); True if any went back.

    glibc returns the top of a heap only, so pages freed below a live block stay resident. A phase
    that churns through many mid-sized blocks (prep's filtering passes) calls this when it ends, so
    the next phase starts from the memory still in use. Cheap (one walk of the free lists); a no-op
    without glibc.
    """
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))

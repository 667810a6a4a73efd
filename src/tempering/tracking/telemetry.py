"""System telemetry records (`split: "system"`): memory, CPU, device memory, time waiting for data.

Fields: `rss_mb` and `peak_rss_mb` (this process), `ram_used_pct` (the machine), `cpu_pct`
(this process since the previous record; 100 = one core busy), `data_wait_frac` (the share of
training time since the previous record spent fetching batches; evaluation time excluded), and
per device `cuda_allocated_mb` / `cuda_reserved_mb` / `cuda_peak_mb` (CUDA) or
`mps_allocated_mb` / `mps_driver_mb` (Apple). psutil reads the process and machine figures;
the peak RSS comes from getrusage. A record costs ~0.1 ms; the per-step cost is two clock reads.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import psutil
import torch

MB = 1024 * 1024


class SystemTelemetry:
    """Times data fetching every step; turns the machine's state into a record when one is due."""

    def __init__(self, device: torch.device, *, every_steps: int | None):
        self.device = device
        self.every_steps = every_steps  # None: with each train log line; 0: never
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # start the CPU interval
        self._waiting_s = 0.0
        self._excluded_s = 0.0
        self._since = time.perf_counter()

    @contextlib.contextmanager
    def fetching_data(self) -> Iterator[None]:
        """Count the time inside as waiting for data."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._waiting_s += time.perf_counter() - started

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (an evaluation) out of the training time the wait fraction divides by."""
        self._excluded_s += seconds

    def due(self, step: int, logged: bool) -> bool:
        """Whether a record is due after this step (`logged`: a train line was just written)."""
        if self.every_steps is None:
            return logged
        return self.every_steps > 0 and step % self.every_steps == 0

    def record(self, step: int) -> dict:
        """The system record at `step`; restarts the CPU and data-wait intervals."""
        now = time.perf_counter()
        train_s = max(now - self._since - self._excluded_s, 1e-9)
        rss = self._process.memory_info().rss
        record = {"step": step, "split": "system", "rss_mb": rss / MB,
                  "peak_rss_mb": max(peak_rss_bytes(), rss) / MB, "ram_used_pct": psutil.virtual_memory().percent,
                  "cpu_pct": self._process.cpu_percent(None),
                  "data_wait_frac": min(self._waiting_s / train_s, 1.0), **device_memory(self.device)}
        self._waiting_s, self._excluded_s, self._since = 0.0, 0.0, now
        return record


def peak_rss_bytes() -> int:
    """This process's peak resident set size."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def device_memory(device: torch.device) -> dict[str, float]:
    """Allocated / reserved / peak memory of a CUDA device, or allocated / driver memory on MPS."""
    if device.type == "cuda":
        return {"cuda_allocated_mb": torch.cuda.memory_allocated(device) / MB,
                "cuda_reserved_mb": torch.cuda.memory_reserved(device) / MB,
                "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / MB}
    if device.type == "mps":
        return {"mps_allocated_mb": torch.mps.current_allocated_memory() / MB,
                "mps_driver_mb": torch.mps.driver_allocated_memory() / MB}
    return {}

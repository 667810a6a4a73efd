"""The pinned mmap threshold: a freed large tensor leaves the process instead of staying in glibc's heap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tempering.allocator import (
    ONEDNN_CACHE_CAPACITY,
    ONEDNN_CACHE_ENV,
    SUGGESTED_THRESHOLD,
    bound_onednn_cache,
    release_free_memory,
    threshold_from_env,
)
from tempering.cli import main
from tempering.errors import UserError
from tests.conftest import assert_user_error

# Free one large block (glibc then raises its threshold unless pinned), allocate another of the same
# size, a small one after it, free the large one, and report how much of it stayed resident.
PROBE = textwrap.dedent("""
    import sys, torch
    from tempering.allocator import pin_mmap_threshold
    pin_mmap_threshold({"TEMPERING_MMAP_THRESHOLD": sys.argv[1]})
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    size = 8 * 2**20 // 4
    first = torch.ones(size); del first
    before = rss_mb()
    block = torch.ones(size)
    keep = torch.ones(16)
    del block
    print(rss_mb() - before)
""")


def kept_after_free_mb(threshold: str) -> float:
    """MB of a freed 8 MB tensor still resident, with TEMPERING_MMAP_THRESHOLD=threshold."""
    result = subprocess.run([sys.executable, "-c", PROBE, threshold], capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_a_freed_large_tensor_goes_back_to_the_system_only_with_the_threshold_pinned():
    assert kept_after_free_mb(str(SUGGESTED_THRESHOLD)) < 1.0
    assert kept_after_free_mb("0") > 7.0  # glibc's own dynamic threshold keeps it in the heap


def test_the_threshold_comes_from_the_environment():
    assert threshold_from_env({}) == 0  # off unless asked: it costs step time
    assert threshold_from_env({"TEMPERING_MMAP_THRESHOLD": "0"}) == 0
    assert threshold_from_env({"TEMPERING_MMAP_THRESHOLD": " 1048576 "}) == 1048576
    for bad in ("lots", "-1"):
        with pytest.raises(UserError, match="TEMPERING_MMAP_THRESHOLD"):
            threshold_from_env({"TEMPERING_MMAP_THRESHOLD": bad})


def test_a_bad_threshold_is_one_line_and_status_2(temper):
    result = temper("presets", env={"TEMPERING_MMAP_THRESHOLD": "lots"})
    assert_user_error(result, "TEMPERING_MMAP_THRESHOLD='lots'", "size in bytes")


# Fill the heap with 40 MB of small arrays, keep one allocated after them (so the heap's top is in
# use and glibc cannot shrink it on its own), free the rest, and report what stayed and what remains
# after release_free_memory.
TRIM_PROBE = textwrap.dedent("""
    import numpy as np
    from tempering.allocator import release_free_memory
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    before = rss_mb()
    blocks = [np.ones(1000) for _ in range(5000)]
    last = np.ones(1000)
    del blocks
    freed = rss_mb()
    released = release_free_memory()
    print(freed - before, rss_mb() - before, released)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim exists on Linux only")
def test_released_memory_leaves_the_process():
    result = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True)
    freed, released, returned = result.stdout.split()
    assert float(freed) > 30.0  # freed below a live block: still resident
    assert float(released) < 5.0 and returned == "True"


def test_releasing_memory_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert release_free_memory() is False


def test_onednn_cache_is_capped_unless_the_user_chose_a_capacity():
    environ = {}
    bound_onednn_cache(environ)
    assert environ == {ONEDNN_CACHE_ENV: str(ONEDNN_CACHE_CAPACITY)}
    chosen = {ONEDNN_CACHE_ENV: "1024"}
    bound_onednn_cache(chosen)
    assert chosen == {ONEDNN_CACHE_ENV: "1024"}


def test_the_temper_command_sets_the_cap_before_it_runs(monkeypatch, capsys):
    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    main(["presets"])
    assert "moe_tiny" in capsys.readouterr().out
    assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_CACHE_CAPACITY)

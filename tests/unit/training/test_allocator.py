"""The pinned mmap threshold: a freed large tensor leaves the process instead of staying in glibc's heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tempering.allocator import SUGGESTED_THRESHOLD, threshold_from_env
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

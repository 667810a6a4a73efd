"""Device helpers: CPU flags and the bf16 hint."""

from __future__ import annotations

import torch

from tempering.training.device import cpu_flags, precision_hint

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu sse2
"""


def test_cpu_flags_reads_the_first_cpu(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_bf16_is_suggested_only_for_fp32_on_a_cpu_that_has_it():
    cpu = torch.device("cpu")
    hint = precision_hint(cpu, "fp32", {"avx2", "amx_bf16", "avx512_bf16"})
    assert hint is not None and "--precision bf16" in hint and "amx_bf16, avx512_bf16" in hint
    assert precision_hint(cpu, "fp32", {"avx2", "avx512f"}) is None
    assert precision_hint(cpu, "bf16", {"avx512_bf16"}) is None

"""`benchmarks/gpu_suite.py --smoke --device cpu` runs its rows and report path end to end (it never runs on GPUs in CI)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_gpu_suite_smoke_reports_every_row_it_runs(tmp_path):
    out = tmp_path / "gpu_suite.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_suite.py"), "--smoke", "--device",
                             "cpu", "--work", str(tmp_path / "work"), "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    rows = report["models"]["tiny"]["rows"]
    assert sorted(rows) == ["hf_trainer", "temper", "temper_fsdp_1rank"]  # compiled rows are left out of --smoke
    for name, row in rows.items():
        assert "error" not in row, (name, row)
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1 and row["steps_timed"] == 3, (name, row)
    assert report["peak_bf16_flops_per_s"] > 0 and report["models"]["tiny"]["parameters"] > 100_000
    table = [line for line in result.stdout.splitlines() if line.startswith("| tiny |")]
    assert [line.split("|")[3].strip() for line in table] == list(rows)
    assert table[0].rstrip().endswith("| 1.00x |")


def test_gpu_suite_refuses_to_run_without_a_gpu_unless_asked_for_cpu():
    import os

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the suite would run for real")
    result = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_suite.sh")], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 2 and "needs a GPU" in result.stderr

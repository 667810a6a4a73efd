"""`benchmarks/vs_peers.py --smoke` runs end to end and reports every row it can run (CI keeps it from rotting)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def installed(*packages: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in packages)


def temper_has_sft() -> bool:
    return subprocess.run([sys.executable, "-m", "tempering", "sft", "--help"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_smoke_run_reports_tempering_and_every_installed_peer(tmp_path, monkeypatch):
    out = tmp_path / "vs_peers.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "vs_peers.py"), "--smoke", "--no-docs",
                             "--work", str(tmp_path / "work"), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    rows = report["rows"]

    ours = rows["pretrain/tempering/fp32"]
    assert ours["status"] == "ok", ours
    assert ours["tokens_per_s"] > 0 and ours["median_step_s"] > 0
    assert 0 < ours["time_to_first_step_s"] < report["raw"]["pretrain/tempering/fp32"][0]["wall_s"]
    assert ours["peak_rss_mb"] > 100  # torch alone is more than this
    assert ours["mfu"] == pytest.approx(ours["tokens_per_s"] * report["flops_per_token"]
                                        / report["matmul_rate_used"]["fp32"])
    assert ours["tokens_per_s_vs_tempering"] == pytest.approx(1.0)
    assert report["steps"] == 2 and len(report["matmul_flops_per_s"]["fp32"]) == 2

    peers = {"pretrain/hf-trainer/fp32": ("transformers", "accelerate", "datasets"),
             "pretrain/hf-loop/fp32": ("transformers",),
             "sft/trl-bfd/fp32": ("transformers", "accelerate", "datasets", "trl"),
             "sft/trl-wrapped/fp32": ("transformers", "accelerate", "datasets", "trl")}
    for name, packages in peers.items():
        if not installed(*packages):
            assert rows[name]["status"].startswith("skipped"), rows[name]
            continue
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["tokens_per_s"] > 0 and rows[name]["time_to_first_step_s"] > 0
        if name.startswith("pretrain/"):
            assert rows[name]["tokens_per_s_vs_tempering"] == pytest.approx(
                rows[name]["tokens_per_s"] / ours["tokens_per_s"])

    sft = rows["sft/tempering/fp32"]
    if temper_has_sft():
        assert sft["status"] == "ok" and sft["tokens_per_s"] > 0, sft
        long_rows = rows["sft/tempering long-rows/fp32"]
        assert long_rows["status"] == "ok" and long_rows["tokens_per_s"] > 0, long_rows
    else:
        assert sft["status"].startswith("not available yet"), sft
    # The Markdown table printed last is the JSON's rows rendered. Its labels depend on machine
    # load (a row disturbed by other jobs says so), so compare with a rendering, not a literal.
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    from peers.report import markdown

    table = markdown(report)
    assert result.stdout.endswith(table + "\n"), result.stdout
    for name in rows:
        _, row, precision = name.split("/")
        assert re.search(rf"^\| {re.escape(row)}( \(.*\))? \| {precision} \|", table, re.M), name

"""`temper plot` on real run dirs: a valid PNG, runs overlaid, events marked, clear errors."""

from __future__ import annotations

import importlib.util
import struct

import pytest

from tests.conftest import assert_user_error, run_temper

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                reason="needs matplotlib: pip install -e '.[track]' (CI installs it)")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_of_one_run_writes_a_png_into_the_run_dir(base_run):
    result = run_temper("plot", base_run, check=True)
    output = base_run / "plot.png"
    width, height = png_size(output)
    assert width >= 800 and height >= 600
    assert 20_000 < output.stat().st_size < 2_000_000
    assert "loss (run val, run train)" in result.stderr  # base_run's dir is named run
    assert "tokens_per_s (run train)" in result.stderr and "rss_mb (run)" in result.stderr
    output.unlink()


def test_plot_overlays_runs_and_marks_early_stopping(pretrain, base_run, tmp_path):
    stopped = tmp_path / "stopped"
    pretrain(stopped, "--max-steps", "50", "--lr", "0", "--eval-steps", "2", "--early-stopping-patience", "2")
    output = tmp_path / "out" / "both.png"
    result = run_temper("plot", base_run, stopped, "--output", output, "--metrics", "loss,lr", "--x", "tokens",
                        check=True)
    png_size(output)
    assert "loss (run val, run train, stopped val, stopped train, stopped early_stop)" in result.stderr
    assert "lr (run train, stopped train, stopped early_stop)" in result.stderr


def test_plot_errors_name_the_problem(base_run, tmp_path):
    assert_user_error(run_temper("plot", tmp_path), "has no metrics.jsonl")
    assert_user_error(run_temper("plot", base_run, "--metrics", "bleu", "--output", tmp_path / "x.png"),
                      "none of bleu", "available:", "loss")
    assert not (tmp_path / "x.png").exists()

"""Shared test fixtures: run the real `temper` command in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Runs record themselves in a cache file; tests keep it out of the user's home.
TEST_CACHE_DIR = Path(tempfile.gettempdir()) / f"tempering-tests-cache-{os.getpid()}"
os.environ["TEMPERING_CACHE_DIR"] = str(TEST_CACHE_DIR)  # in-process code too (the speech feature cache)


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's cache folder (run records, speech features)."""
    shutil.rmtree(TEST_CACHE_DIR, ignore_errors=True)


def run_temper(*args: str, cwd: Path | None = None, check: bool = False,
               env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m tempering ARGS` and capture its output as text."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "200", "TEMPERING_CACHE_DIR": str(TEST_CACHE_DIR),
                **(env or {})}
    result = subprocess.run([sys.executable, "-m", "tempering", *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"temper {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def temper():
    """The `run_temper` function, as a fixture."""
    return run_temper


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, and the message names every fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def reached(condition) -> bool:
    """Evaluate a polling condition over a live run's files; a line caught mid-write counts as not yet."""
    try:
        return condition()
    except (ValueError, FileNotFoundError):
        return False

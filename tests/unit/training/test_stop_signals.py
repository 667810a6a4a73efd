"""StopSignals: a stop signal or (rank 0) the file named by $TEMPERING_STOP_FILE asks the loop to stop."""

from __future__ import annotations

import os
import signal

import pytest

from tempering.training.stop_signals import STOP_FILE_ENV, StopSignals


def test_the_stop_file_is_seen_once_it_exists(tmp_path, monkeypatch):
    stop_file = tmp_path / "stop"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    monkeypatch.delenv("RANK", raising=False)
    with StopSignals() as stop:
        assert not stop.requested()
        stop_file.touch()
        assert stop.requested()
        assert stop.received == f"the stop file {stop_file}"
        stop_file.unlink()
        assert stop.requested()  # a stop once asked for stays asked for


def test_without_the_variable_no_file_stops_training(tmp_path, monkeypatch):
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stop").touch()
    with StopSignals() as stop:
        assert not stop.requested()


def test_only_rank_0_reads_the_stop_file(tmp_path, monkeypatch):
    """The flag is all-reduced, so one reader suffices and the shared file system sees one stat per step."""
    stop_file = tmp_path / "stop"
    stop_file.touch()
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    monkeypatch.setenv("RANK", "1")
    with StopSignals() as stop:
        assert not stop.requested()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_a_signal_is_a_request_named_after_it(monkeypatch):
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested()
        assert stop.received == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the previous handler is back

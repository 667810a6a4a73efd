"""The on-disk speech feature cache: same features as computing them, memory-mapped, keyed by the files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tempering.data.audio.feature_cache import FOLDER, cache_key
from tempering.data.audio.io import write_wav
from tempering.data.audio.utterances import Utterance, compute_features


def _utterances(directory, count: int = 3) -> list[Utterance]:
    rows = []
    for index in range(count):
        path = directory / f"u{index}.wav"
        samples = 0.3 * np.random.default_rng(index).standard_normal(4_000 * (index + 1))
        write_wav(path, samples.astype(np.float32))
        rows.append(Utterance(path, f"utterance {index}"))
    return rows


def test_a_second_open_memory_maps_the_features_the_first_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPERING_CACHE_DIR", str(tmp_path / "cache"))
    rows = _utterances(tmp_path)
    first = compute_features(rows, normalize=True)
    stored = sorted(p.name for p in (tmp_path / "cache" / FOLDER).iterdir())
    assert [Path(name).suffixes for name in stored] == [[".lock"], [".npy"], [".offsets", ".npy"]]
    monkeypatch.setattr("tempering.data.audio.utterances.log_mel", None)  # a second open computes nothing
    second = compute_features(rows, normalize=True)
    assert [f.shape for f in second] == [(26, 80), (51, 80), (76, 80)]
    for a, b in zip(first, second, strict=True):
        assert isinstance(b, np.memmap) and b.dtype == np.float16 and not b.flags.writeable
        np.testing.assert_array_equal(a, b)


def test_the_key_changes_with_a_file_and_with_normalisation(tmp_path):
    rows = _utterances(tmp_path, 2)
    paths = [u.path for u in rows]
    key = cache_key(paths, normalize=True)
    assert cache_key(paths, normalize=False) != key and cache_key(paths[:1], normalize=True) != key
    os.utime(paths[0], ns=(0, 1))
    assert cache_key(paths, normalize=True) != key


def test_an_unwritable_cache_only_warns_and_keeps_the_features_in_memory(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TEMPERING_CACHE_DIR", str(blocker))
    rows = _utterances(tmp_path, 1)
    features = compute_features(rows, normalize=False)
    assert features[0].shape == (26, 80) and not isinstance(features[0], np.memmap)
    assert "speech features not cached" in capsys.readouterr().err.replace("\n", " ")


def test_processes_opening_the_same_files_at_once_compute_them_once(tmp_path, monkeypatch):
    import threading
    import time

    from tempering.data.audio.feature_cache import cached_features

    monkeypatch.setenv("TEMPERING_CACHE_DIR", str(tmp_path / "cache"))
    paths = [u.path for u in _utterances(tmp_path, 2)]
    computing, calls, results = threading.Event(), [], {}

    def compute():
        calls.append(threading.current_thread().name)
        computing.set()
        time.sleep(0.5)  # the second opener arrives meanwhile and must wait on the entry's lock
        return [np.full((3, 80), 1.5, np.float16), np.zeros((2, 80), np.float16)]

    def open_features(name):
        results[name] = cached_features(paths, compute, normalize=True)

    first = threading.Thread(target=open_features, args=("first",), name="first")
    first.start()
    computing.wait(10)
    second = threading.Thread(target=open_features, args=("second",), name="second")
    second.start()
    first.join(10), second.join(10)
    assert calls == ["first"]
    assert isinstance(results["second"][0], np.memmap)
    for a, b in zip(results["first"], results["second"], strict=True):
        np.testing.assert_array_equal(a, b)

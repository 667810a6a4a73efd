"""Speech features cached on disk and memory-mapped: computed once per set of audio files, reused by every run and resume.

An ASR or Talker run computes the log-mel of every utterance when it opens its data. Held in
memory, 11 h of speech took ~1.4 GB, and every resume paid for the computation again. Here the
features of one list of utterances are written once, as one float16 array (every utterance's
frames end to end) and its offsets, under a key that hashes each audio file's path, size and
modification time, the front-end's parameters and whether the features are normalised. Later
opens memory-map that array, so its pages live in the page cache, which the kernel can drop.

The cache is `speech-features/` in $TEMPERING_CACHE_DIR, else ~/.cache/tempering. A cache that
cannot be written costs only the cache (one warning). Entries are never pruned; deleting the
folder is always safe. numpy's .npy format, an atomic rename and an flock per entry (ranks that
open the same files together compute them once) do the work: no library adds anything here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tempering.checkpoint.resolution import default_cache_dir
from tempering.data.audio import features as front_end

FOLDER = "speech-features"
FORMAT = 1  # raise when the stored layout or the front-end's arithmetic changes


def cached_features(paths: Sequence[Path], compute: Callable[[], list[np.ndarray]], *, normalize: bool,
                    environ: Mapping[str, str] = os.environ) -> list[np.ndarray]:
    """Each file's (frames, bins) float16 features, memory-mapped from the cache, or `compute()`d and stored first.

    The entry's lock file makes processes that open the same files at once (the ranks of one
    run, before their process group exists) wait for the first to compute and store them.
    """
    folder = default_cache_dir(environ) / FOLDER
    key = cache_key(paths, normalize=normalize)
    data_path, offsets_path = folder / f"{key}.npy", folder / f"{key}.offsets.npy"
    cached = _load(data_path, offsets_path)
    if cached is not None:
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"{key}.lock", "a")  # noqa: SIM115 - held until the entry is stored
    except OSError as error:
        return _uncached(folder, error, compute())
    with lock:
        # Released when the file closes. A filesystem without locks: each process computes the entry itself.
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _load(data_path, offsets_path)  # another process may have stored it while this one waited
        if cached is not None:
            return cached
        features = compute()
        try:
            _store(folder, data_path, offsets_path, features)
        except OSError as error:
            return _uncached(folder, error, features)
    return _views(np.load(data_path, mmap_mode="r"), np.load(offsets_path))


def _load(data_path: Path, offsets_path: Path) -> list[np.ndarray] | None:
    """The stored entry's views, or None when it is missing or damaged (then it is computed again and overwritten)."""
    if not (data_path.is_file() and offsets_path.is_file()):
        return None
    try:
        return _views(np.load(data_path, mmap_mode="r"), np.load(offsets_path))
    except (OSError, ValueError):
        return None


def _uncached(folder: Path, error: OSError, features: list[np.ndarray]) -> list[np.ndarray]:
    """Warn that the cache could not be written and hand back the in-memory features."""
    from tempering.tracking.console import warn

    warn(f"speech features not cached in {folder} ({error.strerror or error}); they stay in memory")
    return features


def cache_key(paths: Sequence[Path], *, normalize: bool) -> str:
    """A hex digest of the files (resolved path, size, mtime), the front-end's parameters and the normalisation."""
    digest = hashlib.sha256()
    parameters = (FORMAT, normalize, front_end.N_MELS, front_end.WIN_LENGTH, front_end.HOP_LENGTH, front_end.N_FFT,
                  front_end.LOG_FLOOR, front_end.SAMPLE_RATE)
    digest.update(repr(parameters).encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"\0{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _store(folder: Path, data_path: Path, offsets_path: Path, features: list[np.ndarray]) -> None:
    """Write the features end to end and their offsets, each to a temporary file renamed into place."""
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in features], dtype=np.int64)]).astype(np.int64)
    width = features[0].shape[1] if features else front_end.N_MELS

    def write_data(temporary: str) -> None:  # row by row into a mapped file: no second copy in memory
        data = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16, shape=(int(offsets[-1]), width))
        for start, utterance in zip(offsets[:-1], features, strict=True):
            data[int(start):int(start) + len(utterance)] = utterance
        data.flush()
        del data

    for target, write in ((offsets_path, lambda temporary: np.save(temporary, offsets)), (data_path, write_data)):
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npy")
        os.close(handle)
        try:
            write(temporary)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _views(data: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """One read-only (frames, bins) view of `data` per utterance."""
    return [data[int(start):int(end)] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]

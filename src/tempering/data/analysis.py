"""Per-document features for the filters (quality verdict, MinHash band hashes), computed in worker processes.

A batch's features depend on its texts only, and batches come back in the order they were
sent, so the result is the same for any number of workers. With one worker everything runs
in the calling process. Workers start with `forkserver`: forking a process that already runs
tokenizer or torch threads is unsafe. This module imports only numpy and the two feature
modules, so a worker starts quickly.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from tempering.data.near_dedup import MinHashParams, band_hashes, minhash_bands
from tempering.data.quality import RULES, QualityThresholds, quality_problem

RULE_CODES = {rule: code for code, rule in enumerate(RULES)}
NO_PROBLEM = -1


@dataclass(frozen=True)
class AnalysisTask:
    """Which features to compute: the quality verdict (with these thresholds) and/or MinHash band hashes."""

    quality: QualityThresholds | None = None
    minhash: MinHashParams | None = None
    shingle_sizes: bool = False  # with the band hashes, each text's number of distinct shingles


@dataclass
class Features:
    """Features of one batch: per text the code of the quality rule it breaks (NO_PROBLEM if none), band hashes."""

    problems: np.ndarray
    band_hashes: np.ndarray | None  # 0 for a text the quality rules remove: it is never compared
    shingle_sizes: np.ndarray | None = None  # distinct shingles per text (0 where the band hashes are), if asked


def analyse(texts: list[str], task: AnalysisTask) -> Features:
    """The features `task` asks for, for each text."""
    problems = np.full(len(texts), NO_PROBLEM, np.int8)
    if task.quality is not None:
        for index, text in enumerate(texts):
            problem = quality_problem(text, task.quality)
            if problem is not None:
                problems[index] = RULE_CODES[problem]
    if task.minhash is None:
        return Features(problems, None)
    kept = np.flatnonzero(problems == NO_PROBLEM)
    hashes = np.zeros((len(texts), task.minhash.bands), np.uint64)
    kept_texts = [texts[index] for index in kept]
    if not task.shingle_sizes:
        hashes[kept] = band_hashes(kept_texts, task.minhash)
        return Features(problems, hashes)
    sizes = np.zeros(len(texts), np.uint32)
    hashes[kept], sizes[kept] = minhash_bands(kept_texts, task.minhash)
    return Features(problems, hashes, sizes)


def _exit_with_parent() -> None:
    """In a worker: exit as soon as the process that started it dies (killed prep leaves no orphans)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()


def analyse_in_order(batches: Iterator[tuple[object, list[str]]], task: AnalysisTask,
                     workers: int) -> Iterator[tuple[object, Features]]:
    """(tag, features) for each (tag, texts) batch, in order, computed by `workers` processes."""
    if workers <= 1:
        for tag, texts in batches:
            yield tag, analyse(texts, task)
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with_parent) as pool:
        pending: deque[tuple[object, Future]] = deque()
        for tag, texts in batches:
            pending.append((tag, pool.submit(analyse, texts, task)))
            if len(pending) >= 2 * workers:  # bounds the texts in flight
                done_tag, future = pending.popleft()
                yield done_tag, future.result()
        while pending:
            done_tag, future = pending.popleft()
            yield done_tag, future.result()

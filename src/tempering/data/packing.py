"""Packing token streams into fixed-length training sequences, and their order per epoch.

A dataset is a token array (a memmap over shards, or tokens held in memory) plus the
spans of it that belong to this split. Spans are concatenated in order and cut into
windows of `seq_len + 1` tokens (inputs and shifted labels), with no padding. The
order of windows in an epoch is a pure function of (seed, epoch), so a run can be
resumed at any micro-batch by its index alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TokenReader = Callable[[int, int], np.ndarray]  # (start, length) -> tokens


@dataclass
class TokenSpans:
    """Ranges [start, start+length) of one token space that make up a split."""

    read: TokenReader
    starts: np.ndarray  # int64
    lengths: np.ndarray  # int64

    @property
    def num_tokens(self) -> int:
        """Total tokens over all spans."""
        return int(self.lengths.sum())


def split_documents(document_ends: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose val documents at random (seeded); return (train_mask, val_mask) over documents."""
    num_documents = len(document_ends)
    if val_fraction <= 0 or num_documents < 2:
        return np.ones(num_documents, bool), np.zeros(num_documents, bool)
    rng = np.random.default_rng([seed, 0x5EED])
    is_val = rng.random(num_documents) < val_fraction
    if not is_val.any():
        is_val[rng.integers(num_documents)] = True
    if is_val.all():
        is_val[rng.integers(num_documents)] = False
    return ~is_val, is_val


def spans_of_documents(read: TokenReader, document_ends: np.ndarray, keep: np.ndarray) -> TokenSpans:
    """Spans covering the kept documents, merging neighbours into one span.

    `document_ends[i]` is the exclusive end (just past its EOS) of document i.
    """
    ends = document_ends.astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    keep_starts, keep_ends = starts[keep], ends[keep]
    if len(keep_starts) == 0:
        return TokenSpans(read, np.zeros(0, np.int64), np.zeros(0, np.int64))
    # A kept document that starts where the previous kept one ended continues its span.
    new_run = np.concatenate([[True], keep_starts[1:] != keep_ends[:-1]])
    run_ids = np.cumsum(new_run) - 1
    run_starts = keep_starts[new_run]
    run_ends = np.zeros(len(run_starts), np.int64)
    np.maximum.at(run_ends, run_ids, keep_ends)
    return TokenSpans(read, run_starts, run_ends - run_starts)


class PackedSequences:
    """Fixed-length windows of seq_len+1 tokens over concatenated spans."""

    def eval_batches(self, batch_size: int):
        """Yield {"tokens": (b, seq_len+1)} batches over all windows in order (the last one may be smaller)."""
        for start in range(0, self.num_sequences, batch_size):
            rows = range(start, min(self.num_sequences, start + batch_size))
            yield {"tokens": np.stack([self[i].astype(np.int64) for i in rows])}

    def __init__(self, spans: TokenSpans, seq_len: int):
        self.spans = spans
        self.seq_len = seq_len
        self._offsets = np.concatenate([[0], np.cumsum(spans.lengths)]).astype(np.int64)
        self.num_sequences = max(0, (spans.num_tokens - 1) // seq_len)

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> np.ndarray:
        """Tokens [index*seq_len, index*seq_len + seq_len + 1) of the concatenated spans."""
        if not 0 <= index < self.num_sequences:
            raise IndexError(index)
        begin = index * self.seq_len
        end = begin + self.seq_len + 1
        span = int(np.searchsorted(self._offsets, begin, side="right")) - 1
        pieces = []
        while begin < end:
            within = begin - self._offsets[span]
            take = min(end - begin, int(self.spans.lengths[span] - within))
            pieces.append(self.spans.read(int(self.spans.starts[span] + within), take))
            begin += take
            span += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass(frozen=True)
class EpochPlan:
    """Which (dataset, sequence) pairs an epoch visits, in order."""

    dataset_index: np.ndarray
    sequence_index: np.ndarray

    def __len__(self) -> int:
        return len(self.dataset_index)


def plan_epoch(sizes: list[int], weights: list[float], seed: int, epoch: int, *, shuffle: bool = True) -> EpochPlan:
    """Order an epoch over several datasets; dataset d contributes round(size_d * weight_d) sequences.

    A weight above 1 repeats a dataset (cycling through a fresh permutation), below 1
    subsamples it. The result depends only on (sizes, weights, seed, epoch).
    """
    dataset_parts, sequence_parts = [], []
    for d, (size, weight) in enumerate(zip(sizes, weights, strict=True)):
        count = int(round(size * weight))
        if size == 0 or count == 0:
            continue
        rng = np.random.default_rng([seed, epoch, d])
        cycles = -(-count // size)
        order = np.concatenate([rng.permutation(size) if shuffle else np.arange(size) for _ in range(cycles)])[:count]
        dataset_parts.append(np.full(count, d, np.int32))
        sequence_parts.append(order.astype(np.int64))
    if not dataset_parts:
        return EpochPlan(np.zeros(0, np.int32), np.zeros(0, np.int64))
    datasets, sequences = np.concatenate(dataset_parts), np.concatenate(sequence_parts)
    if shuffle:
        permutation = np.random.default_rng([seed, epoch]).permutation(len(datasets))
        datasets, sequences = datasets[permutation], sequences[permutation]
    return EpochPlan(datasets, sequences)


class SequenceBatches:
    """Micro-batches of packed sequences, addressable by a global micro-batch index.

    Micro-batch g of the run is batch (g mod per_epoch) of epoch (g div per_epoch); the
    incomplete last batch of an epoch is dropped. Resuming needs only g.
    """

    def __init__(self, datasets: list[PackedSequences], weights: list[float], batch_size: int, seed: int,
                 *, shuffle: bool = True):
        self.datasets = datasets
        self.weights = weights
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self._plans: dict[int, EpochPlan] = {}
        sizes = [len(d) for d in datasets]
        self.sequences_per_epoch = sum(int(round(s * w)) for s, w in zip(sizes, weights, strict=True))
        self.batches_per_epoch = self.sequences_per_epoch // batch_size

    def plan(self, epoch: int) -> EpochPlan:
        """The (cached) order of one epoch."""
        if epoch not in self._plans:
            self._plans = {epoch: plan_epoch([len(d) for d in self.datasets], self.weights, self.seed, epoch,
                                             shuffle=self.shuffle)}
        return self._plans[epoch]

    def batch(self, micro_batch: int) -> dict[str, np.ndarray]:
        """Global micro-batch `micro_batch`: {"tokens": int64 (batch_size, seq_len + 1)}."""
        epoch, index = divmod(micro_batch, self.batches_per_epoch)
        plan = self.plan(epoch)
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return {"tokens": np.stack([self.datasets[d][int(i)].astype(np.int64)
                                    for d, i in zip(plan.dataset_index[rows], plan.sequence_index[rows], strict=True)])}

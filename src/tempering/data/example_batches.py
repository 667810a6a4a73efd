"""Batches of rendered chat examples, packed (default) or padded, addressable by a global index.

Packing puts whole examples side by side in rows of `row_len` tokens (default
`seq_len`, the longest an example may be; longer rows fill better when many examples
are longer than half a row, at a higher attention cost per token). Each example
gets its own document id and positions that restart at 0, so under the model's
document mask an example's loss is the same packed or alone. Rows are formed once,
from the seeded example order of epoch 0 (best-fit decreasing within windows of that
order), and every epoch shuffles the rows. Forming rows once keeps the number of rows,
and so `batches_per_epoch`, fixed — the loop's addressing needs that (micro-batch g is
batch g mod per_epoch of epoch g div per_epoch) — and which examples share a row never
changes the loss, only which batch they land in. The last, smaller batch of an epoch
is kept, so every example is trained on once per epoch.

Padding puts one example per row, padded to the longest of the batch rounded up to a
multiple of 8; the example order is reseeded every epoch.

Bin packing is written here (~25 lines on `bisect`): TRL's packer needs `datasets`
and TRL itself, and the `binpacking` package handles neither windows nor order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tempering.data.packing import plan_epoch
from tempering.errors import UserError

IGNORE_INDEX = -100
PAD_MULTIPLE = 8  # padded lengths round up to this: tensor-core friendly, fewer distinct shapes
PACKING_WINDOW = 1000  # examples sorted together by best-fit decreasing; keeps rows mixed across the data
LOW_FILL = 0.9  # packed rows fuller than this need no advice; below it, rows twice as long are suggested
_ROW_SHUFFLE = 0x20B5  # seed tag of the per-epoch row order, apart from the example order's seeds

Batch = dict[str, "np.ndarray | None"]


class TokenizedExample(Protocol):
    """What rendering hands over: equal-length int arrays, labels already shifted (-100 = no loss)."""

    input_ids: np.ndarray
    labels: np.ndarray


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= value."""
    return -(-value // multiple) * multiple


def padded_length(longest: int, max_len: int | None = None) -> int:
    """Row length for a batch whose longest example has `longest` tokens: a multiple of 8, capped at max_len."""
    length = round_up(longest, PAD_MULTIPLE)
    return length if max_len is None else max(min(length, max_len), longest)


def packed_row_length(seq_len: int, pack_length: int | None) -> int:
    """Row length for packing: sft.pack_length if set, else data.seq_len; UserError when shorter than seq_len."""
    if pack_length is None:
        return seq_len
    if pack_length < seq_len:
        raise UserError(f"sft.pack_length ({pack_length}) is shorter than data.seq_len ({seq_len}), the longest "
                        "an example may be; set it to at least data.seq_len or leave it unset")
    return pack_length


def pad_examples(examples: list[TokenizedExample], *, pad_id: int,
                 max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad examples into (N, T) int64 input_ids and labels (-100 on pads).

    T is the longest example rounded up to a multiple of 8, capped at `max_len`.
    """
    length = padded_length(max(len(example.input_ids) for example in examples), max_len)
    input_ids = np.full((len(examples), length), pad_id, np.int64)
    labels = np.full((len(examples), length), IGNORE_INDEX, np.int64)
    for row, example in enumerate(examples):
        input_ids[row, :len(example.input_ids)] = example.input_ids
        labels[row, :len(example.labels)] = example.labels
    return input_ids, labels


def padding_mask(lengths: np.ndarray | list[int], row_len: int) -> np.ndarray | None:
    """(N, row_len) int64, 1 on each row's first `lengths[i]` tokens and 0 on its right padding; None if none is padded.

    The model then runs its per-token layers on the real tokens only (`models/unpadding.py`).
    """
    lengths = np.asarray(lengths)
    if (lengths >= row_len).all():
        return None
    return (np.arange(row_len)[None, :] < lengths[:, None]).astype(np.int64)


def pack_rows(lengths: np.ndarray, order: np.ndarray, seq_len: int, *,
              window: int = PACKING_WINDOW) -> list[np.ndarray]:
    """Group example indices (taken in `order`) into rows of at most `seq_len` tokens.

    Best-fit decreasing within each window of `window` consecutive examples: longest
    first, each into the open row it fills most tightly. Deterministic.
    """
    rows: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        window_rows: list[list[int]] = []
        free: list[tuple[int, int]] = []  # (free tokens, row in window), sorted
        for example in chunk[np.argsort(-lengths[chunk], kind="stable")]:
            length = int(lengths[example])
            slot = bisect.bisect_left(free, (length, -1))  # tightest row with room
            if slot == len(free):
                row, remaining = len(window_rows), seq_len
                window_rows.append([])
            else:
                remaining, row = free.pop(slot)
            window_rows[row].append(int(example))
            if remaining > length:
                bisect.insort(free, (remaining - length, row))
        rows.extend(np.array(row, np.int64) for row in window_rows)
    return rows


class ExampleBatches:
    """Micro-batches of rendered examples, packed or padded, addressable by a global micro-batch index.

    `dataset_ids` (one per example) and `weights` (one per dataset) mix datasets as
    `plan_epoch` does: dataset d contributes round(size_d * weight_d) examples per epoch.
    With packing the mix is drawn once (epoch 0) and its rows reused every epoch.
    """

    def __init__(self, examples: list[TokenizedExample], *, seq_len: int, batch_size: int, seed: int,
                 packing: bool = True, pad_id: int = 0, dataset_ids: list[int] | np.ndarray | None = None,
                 weights: list[float] | None = None, shuffle: bool = True, window: int = PACKING_WINDOW,
                 row_len: int | None = None):
        self.examples = examples
        self.seq_len = seq_len
        self.row_len = seq_len if row_len is None else row_len  # packed row length; examples stay <= seq_len
        if self.row_len < seq_len:
            raise ValueError(f"packed rows of {self.row_len} tokens cannot hold examples of up to {seq_len}")
        self.batch_size = batch_size
        self.seed = seed
        self.packing = packing
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.lengths = np.array([len(example.input_ids) for example in examples], np.int64)
        _check_lengths(examples, self.lengths, seq_len)
        ids = np.zeros(len(examples), np.int64) if dataset_ids is None else np.asarray(dataset_ids, np.int64)
        self.dataset_ids, self.window = ids, window
        num_datasets = int(ids.max()) + 1 if len(ids) else 1
        self.weights = [1.0] * num_datasets if weights is None else list(weights)
        if len(ids) != len(examples) or len(self.weights) != num_datasets:
            raise ValueError(f"{len(examples)} examples, {len(ids)} dataset ids, {len(self.weights)} weights "
                             f"for {num_datasets} datasets")
        # Example indices grouped by dataset: dataset d's i-th example is _grouped[_starts[d] + i].
        self._grouped = np.argsort(ids, kind="stable")
        self._sizes = np.bincount(ids, minlength=num_datasets).tolist()
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.int64)
        self._orders: dict[int, np.ndarray] = {}
        if packing:
            self.rows = pack_rows(self.lengths, self.example_order(0), self.row_len, window=window)
            num_units = len(self.rows)
        else:
            self.rows = []
            num_units = sum(int(round(s * w)) for s, w in zip(self._sizes, self.weights, strict=True))
        if num_units == 0:
            raise ValueError("no examples to batch (empty data, or all weights 0)")
        self.batches_per_epoch = -(-num_units // batch_size)  # the last, smaller batch is kept

    def with_row_len(self, row_len: int) -> ExampleBatches:
        """The same examples, mix and seed, packed into rows of `row_len` tokens."""
        return ExampleBatches(self.examples, seq_len=self.seq_len, batch_size=self.batch_size, seed=self.seed,
                              packing=self.packing, pad_id=self.pad_id, dataset_ids=self.dataset_ids,
                              weights=self.weights, shuffle=self.shuffle, window=self.window, row_len=row_len)

    def example_order(self, epoch: int) -> np.ndarray:
        """Indices into `examples` that an epoch visits, in order: a pure function of (seed, epoch)."""
        plan = plan_epoch(self._sizes, self.weights, self.seed, epoch, shuffle=self.shuffle)
        return self._grouped[self._starts[plan.dataset_index] + plan.sequence_index]

    def _order(self, epoch: int) -> np.ndarray:
        """The (cached) rows (packing) or examples (padding) of an epoch, in order."""
        if epoch not in self._orders:
            if not self.packing:
                order = self.example_order(epoch)
            elif self.shuffle:
                order = np.random.default_rng([self.seed, epoch, _ROW_SHUFFLE]).permutation(len(self.rows))
            else:
                order = np.arange(len(self.rows))
            self._orders = {epoch: order}
        return self._orders[epoch]

    def batch(self, micro_batch: int) -> Batch:
        """Arrays of global micro-batch `micro_batch`: input_ids, labels, document_ids, position_ids, padding_mask.

        All (B, T) int64. `document_ids` is None when no row holds more than one example
        (then the model's causal fast path is exact), and so is `position_ids` unless rows
        are longer than seq_len (padding positions then restart below seq_len). Padded (not
        packed) batches carry `padding_mask` (None when no row is padded). "num_tokens" (an
        int) counts the non-pad tokens, for throughput.
        """
        epoch, index = divmod(micro_batch, self.batches_per_epoch)
        chosen = self._order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        if not self.packing:
            input_ids, labels = pad_examples([self.examples[i] for i in chosen], pad_id=self.pad_id,
                                             max_len=self.seq_len)
            return {"input_ids": input_ids, "labels": labels, "document_ids": None, "position_ids": None,
                    "padding_mask": padding_mask(self.lengths[chosen], input_ids.shape[1]),
                    "num_tokens": int(self.lengths[chosen].sum())}
        return self._packed_batch([self.rows[r] for r in chosen])

    def _packed_batch(self, rows: list[np.ndarray]) -> Batch:
        shape = (len(rows), self.row_len)
        input_ids = np.full(shape, self.pad_id, np.int64)
        labels = np.full(shape, IGNORE_INDEX, np.int64)
        document_ids = np.empty(shape, np.int64)
        position_ids = np.empty(shape, np.int64)
        for r, row in enumerate(rows):
            cursor = 0
            for document, i in enumerate(row):
                example, length = self.examples[i], int(self.lengths[i])
                span = slice(cursor, cursor + length)
                input_ids[r, span], labels[r, span] = example.input_ids, example.labels
                document_ids[r, span], position_ids[r, span] = document, np.arange(length)
                cursor += length
            # Padding is a document of its own, so no example attends to it (nor it to one); its
            # positions stay below seq_len, which the model's rotary table covers.
            document_ids[r, cursor:] = len(row)
            position_ids[r, cursor:] = np.arange(self.row_len - cursor) % self.seq_len
        if all(len(row) <= 1 for row in rows):
            # One example per row: the causal fast path is exact (padding comes last).
            document_ids = None
            if self.row_len == self.seq_len:
                position_ids = None
        return {"input_ids": input_ids, "labels": labels, "document_ids": document_ids,
                "position_ids": position_ids, "num_tokens": int(sum(self.lengths[row].sum() for row in rows))}


def _check_lengths(examples: list[TokenizedExample], lengths: np.ndarray, seq_len: int) -> None:
    """Reject examples rendering should have truncated or dropped."""
    for index in np.flatnonzero((lengths > seq_len) | (lengths == 0)):
        raise ValueError(f"example {index} has {lengths[index]} tokens; rendering must give 1..seq_len "
                         f"({seq_len}) tokens (truncate or drop it)")
    for index, example in enumerate(examples):
        if len(example.labels) != len(example.input_ids):
            raise ValueError(f"example {index}: {len(example.labels)} labels for {len(example.input_ids)} tokens")


def count_trained_tokens(batch: Batch) -> int:
    """Tokens of a batch that carry a loss (labels != -100); call it on the host-side arrays."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class PackingStats:
    """How well an epoch's batches use their tokens (for `inspect-data`)."""

    num_examples: int
    num_rows: int
    num_tokens: int  # example tokens (not padding)
    num_slots: int  # rows x padded length, summed over batches
    num_trained_tokens: int  # tokens with a loss

    @property
    def non_pad_fraction(self) -> float:
        """Share of the computed token slots that hold example tokens."""
        return self.num_tokens / max(self.num_slots, 1)

    @property
    def examples_per_row(self) -> float:
        """Mean examples per row (1 without packing)."""
        return self.num_examples / max(self.num_rows, 1)


def packing_stats(batches: ExampleBatches, epoch: int = 0) -> PackingStats:
    """Measure one epoch of `batches`: example and pad tokens, rows, trained tokens."""
    trained = np.array([int((example.labels != IGNORE_INDEX).sum()) for example in batches.examples])
    if batches.packing:
        members = np.concatenate(batches.rows)
        num_rows, num_slots = len(batches.rows), len(batches.rows) * batches.row_len
    else:
        members = batches.example_order(epoch)
        num_rows, num_slots = len(members), 0
        for start in range(0, len(members), batches.batch_size):
            lengths = batches.lengths[members[start:start + batches.batch_size]]
            num_slots += len(lengths) * padded_length(int(lengths.max()), batches.seq_len)
    return PackingStats(num_examples=len(members), num_rows=num_rows,
                        num_tokens=int(batches.lengths[members].sum()), num_slots=num_slots,
                        num_trained_tokens=int(trained[members].sum()))

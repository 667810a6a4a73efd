"""Padded batches of aligned sentences, grouped by length, addressable by a global micro-batch index.

Sentences vary in length (a few to ~150 pieces), so padding every batch to its longest row
wastes most of the work when rows are drawn at random. Each epoch takes the sentences in a
seeded random order, cuts that order into windows of `GROUP_BATCHES` batches, sorts each window
by length and cuts it into batches (transformers' `LengthGroupedSampler` does the same), then
shuffles the batch order: batches are nearly pad-free and still random. The order is a pure
function of (seed, epoch), so micro-batch g is batch g mod per_epoch of epoch g div per_epoch
and a resume reads exactly the batches it would have. The last, smaller batch is kept.
"""

from __future__ import annotations

import numpy as np

from tempering.data.ner.alignment import IGNORE_INDEX, AlignedSentence

GROUP_BATCHES = 50  # batches per length-sorting window
_BATCH_SHUFFLE = 0x6E52  # seed tag of the batch order, apart from the sentence order


def collate(sentences: list[AlignedSentence], pad_id: int) -> dict:
    """(B, T) input_ids, labels, word_starts and attention_mask (None when no row is padded); num_tokens."""
    lengths = [len(s.input_ids) for s in sentences]
    length = max(lengths)
    input_ids = np.full((len(sentences), length), pad_id, np.int64)
    labels = np.full((len(sentences), length), IGNORE_INDEX, np.int64)
    word_starts = np.zeros((len(sentences), length), bool)
    mask = np.zeros((len(sentences), length), np.int64)
    for row, sentence in enumerate(sentences):
        size = lengths[row]
        input_ids[row, :size], labels[row, :size] = sentence.input_ids, sentence.labels
        word_starts[row, :size], mask[row, :size] = sentence.word_starts, 1
    return {"input_ids": input_ids, "labels": labels, "word_starts": word_starts,
            "attention_mask": None if min(lengths) == length else mask, "num_tokens": int(sum(lengths))}


class SentenceBatches:
    """Training micro-batches of aligned sentences: drawn at random or length-grouped, shuffled per epoch, seeded."""

    def __init__(self, sentences: list[AlignedSentence], *, batch_size: int, seed: int, pad_id: int,
                 group_by_length: bool = False, segments: list[int] | None = None):
        """`segments` (sizes of consecutive runs of `sentences`) are batched one after the other
        (post-training's `append`: old, then new); by default all sentences mix."""
        if not sentences:
            raise ValueError("no sentences to batch")
        self.sentences, self.batch_size, self.seed, self.pad_id = sentences, batch_size, seed, pad_id
        self.group_by_length = group_by_length
        self.segments = segments or [len(sentences)]
        if sum(self.segments) != len(sentences):
            raise ValueError(f"segments {self.segments} do not add up to {len(sentences)} sentences")
        self.lengths = np.array([len(s.input_ids) for s in sentences], np.int64)
        self.batches_per_epoch = sum(-(-size // batch_size) for size in self.segments)
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The sentence indices of every batch of an epoch, in order (cached for the current epoch)."""
        if self._epoch is None or self._epoch[0] != epoch:
            batches, start = [], 0
            for segment, size in enumerate(self.segments):
                batches += self._segment_batches(np.arange(start, start + size), epoch, segment)
                start += size
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def _segment_batches(self, members: np.ndarray, epoch: int, segment: int) -> list[np.ndarray]:
        order = members[np.random.default_rng([self.seed, epoch, segment]).permutation(len(members))]
        if not self.group_by_length:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, window = [], GROUP_BATCHES * self.batch_size
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        shuffled = np.random.default_rng([self.seed, epoch, segment, _BATCH_SHUFFLE]).permutation(len(batches))
        return [batches[i] for i in shuffled]

    def batch(self, micro_batch: int) -> dict:
        """Arrays of global micro-batch `micro_batch` (see `collate`)."""
        epoch, index = divmod(micro_batch, self.batches_per_epoch)
        chosen = self.epoch_batches(epoch)[index]
        return collate([self.sentences[i] for i in chosen], self.pad_id)


class SentenceEvalSet:
    """Validation sentences, batched once each (sorted by length: fewer pads, same metrics)."""

    def __init__(self, sentences: list[AlignedSentence], pad_id: int):
        self.sentences, self.pad_id = sentences, pad_id
        self.order = np.argsort([-len(s.input_ids) for s in sentences], kind="stable")

    def __len__(self) -> int:
        return len(self.sentences)

    def eval_batches(self, batch_size: int):
        """Yield every validation batch once."""
        for start in range(0, len(self.order), batch_size):
            yield collate([self.sentences[i] for i in self.order[start:start + batch_size]], self.pad_id)

"""Packing: windows cover the token stream exactly; epoch order is a pure function of (seed, epoch)."""

from __future__ import annotations

import numpy as np

from tempering.data.packing import (
    PackedSequences,
    SequenceBatches,
    TokenSpans,
    plan_epoch,
    spans_of_documents,
    split_documents,
)


def spans_over(tokens: np.ndarray) -> TokenSpans:
    return TokenSpans(lambda start, length: tokens[start:start + length],
                      np.array([0], np.int64), np.array([len(tokens)], np.int64))


def test_windows_overlap_by_one_token_and_cover_the_stream():
    tokens = np.arange(103)
    packed = PackedSequences(spans_over(tokens), seq_len=10)
    assert len(packed) == 10  # (103 - 1) // 10
    for i in range(len(packed)):
        assert packed[i].tolist() == list(range(i * 10, i * 10 + 11))


def test_windows_cross_span_boundaries_in_order():
    tokens = np.arange(100)
    ends = np.array([10, 25, 40, 70, 100])  # five documents
    keep = np.array([True, False, True, True, False])
    spans = spans_of_documents(lambda s, n: tokens[s:s + n], ends, keep)
    assert spans.starts.tolist() == [0, 25] and spans.lengths.tolist() == [10, 45]  # docs 2 and 3 merged
    stream = list(range(0, 10)) + list(range(25, 70))
    packed = PackedSequences(spans, seq_len=8)
    assert len(packed) == (55 - 1) // 8
    assert np.concatenate([packed[i][:-1] for i in range(len(packed))]).tolist() == stream[:len(packed) * 8]
    assert packed[1].tolist() == stream[8:17]


def test_document_split_is_seeded_and_disjoint():
    ends = np.arange(1, 1001) * 5
    train_a, val_a = split_documents(ends, 0.1, seed=7)
    train_b, val_b = split_documents(ends, 0.1, seed=7)
    _, val_c = split_documents(ends, 0.1, seed=8)
    assert (val_a == val_b).all() and not (val_a == val_c).all()
    assert not (train_a & val_a).any() and (train_a | val_a).all()
    assert 60 < val_a.sum() < 140


def test_epoch_plan_depends_only_on_seed_and_epoch():
    a = plan_epoch([50, 30], [1.0, 1.0], seed=1, epoch=0)
    b = plan_epoch([50, 30], [1.0, 1.0], seed=1, epoch=0)
    c = plan_epoch([50, 30], [1.0, 1.0], seed=1, epoch=1)
    assert (a.sequence_index == b.sequence_index).all() and (a.dataset_index == b.dataset_index).all()
    assert not (a.sequence_index == c.sequence_index).all()
    for d, size in ((0, 50), (1, 30)):  # every sequence exactly once per epoch
        assert sorted(a.sequence_index[a.dataset_index == d].tolist()) == list(range(size))


def test_weights_repeat_or_subsample_datasets():
    plan = plan_epoch([10, 40], [2.5, 0.25], seed=3, epoch=0)
    assert (plan.dataset_index == 0).sum() == 25 and (plan.dataset_index == 1).sum() == 10
    counts = np.bincount(plan.sequence_index[plan.dataset_index == 0], minlength=10)
    assert counts.min() >= 2 and counts.max() <= 3  # cycles through before repeating


def test_batches_are_addressable_by_global_index():
    tokens = np.arange(1001)
    batches = SequenceBatches([PackedSequences(spans_over(tokens), 10)], [1.0], batch_size=4, seed=0)
    assert batches.batches_per_epoch == 25
    first = batches.batch(3)["tokens"]
    again = SequenceBatches([PackedSequences(spans_over(tokens), 10)], [1.0], batch_size=4, seed=0).batch(3)["tokens"]
    assert first.shape == (4, 11) and (first == again).all()
    assert (first[:, 1:] == first[:, :-1] + 1).all()  # each row is a contiguous window
    epoch_rows = np.concatenate([batches.batch(i)["tokens"] for i in range(25)])
    assert sorted(epoch_rows[:, 0].tolist()) == list(range(0, 1000, 10))
    assert not (batches.batch(25)["tokens"] == batches.batch(0)["tokens"]).all()  # epoch 1 reshuffles

"""Utterance batches: every utterance once per epoch, addressable by global index, augmentation seeded per epoch."""

from __future__ import annotations

import numpy as np

from tempering.data.audio.batches import (
    AsrCollate,
    SpecAugment,
    UtteranceBatches,
    code_points,
    texts_from_code_points,
)


def _batches(num: int = 23, batch_size: int = 4, augment: SpecAugment | None = None) -> UtteranceBatches:
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 90, num)
    features = [rng.standard_normal((n, 80)).astype(np.float16) for n in lengths]
    targets = [np.arange(1, 1 + i % 5 + 1) for i in range(num)]
    collate = AsrCollate(features, targets, [f"utt {i}" for i in range(num)], augment=augment, seed=5)
    return UtteranceBatches(lengths, collate, batch_size=batch_size, seed=5)


def test_each_epoch_covers_every_utterance_once_in_a_new_order():
    batches = _batches()
    assert batches.batches_per_epoch == 6
    epochs = [np.concatenate(batches.epoch_batches(e)) for e in (0, 1)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(23))
    assert epochs[0].tolist() != epochs[1].tolist()


def test_a_batch_is_a_function_of_its_global_index_alone():
    augment = SpecAugment(2, 10, 2, 10)
    first, second = _batches(augment=augment), _batches(augment=augment)
    for index in (7, 0, 13):  # any order, a fresh object: the same arrays
        a, b = first.batch(index), second.batch(index)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_masks_change_with_the_epoch_and_validation_is_never_augmented():
    batches = _batches(augment=SpecAugment(2, 10, 2, 10))
    per_epoch = batches.batches_per_epoch
    epoch0 = batches.collate(np.array([0]), 0)["features"]
    epoch1 = batches.collate(np.array([0]), 1)["features"]
    assert not np.array_equal(epoch0, epoch1)
    plain = next(batches.eval_batches(100))
    assert (plain["features"] != 0).all(axis=2).sum() == plain["feature_lengths"].sum()
    assert per_epoch == 6


def test_padding_lengths_and_references_survive_collation():
    batch = _batches().batch(0)
    assert batch["features"].shape[0] == len(batch["feature_lengths"]) <= 4
    assert batch["features"].shape[1] == batch["feature_lengths"].max()
    assert all(t.startswith("utt ") for t in texts_from_code_points(batch["reference"]))
    assert texts_from_code_points(code_points(["it's", "", "é"])) == ["it's", "", "é"]

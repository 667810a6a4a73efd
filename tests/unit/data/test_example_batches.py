"""Example batches: packing never changes an example's loss, and order is a pure function of (seed, epoch)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tempering.data.example_batches import (
    ExampleBatches,
    count_trained_tokens,
    pack_rows,
    packed_row_length,
    packing_stats,
)
from tempering.errors import UserError
from tempering.models.llama.architecture import PRESETS
from tempering.models.llama.model import build_model
from tempering.training.causal_lm import ChatSft

PAD = 0


@dataclass
class Rendered:
    input_ids: np.ndarray
    labels: np.ndarray


def make_example(rng: np.random.Generator, length: int, prompt_len: int = 0) -> Rendered:
    """Random tokens (never the pad id); labels shifted, -100 on the prompt and the last position."""
    input_ids = rng.integers(1, 256, length).astype(np.int32)
    labels = np.full(length, -100, np.int32)
    labels[prompt_len:length - 1] = input_ids[prompt_len + 1:]
    return Rendered(input_ids, labels)


def make_examples(lengths, seed=0) -> list[Rendered]:
    rng = np.random.default_rng(seed)
    return [make_example(rng, int(n), int(n) // 3) for n in lengths]


def segments(batch) -> list[tuple[int, ...]]:
    """The token runs of each document in a batch, padding left out."""
    runs = []
    for r, row in enumerate(batch["input_ids"]):
        documents = (row == PAD).astype(np.int64) if batch["document_ids"] is None else batch["document_ids"][r]
        for document in np.unique(documents):
            tokens = row[documents == document]
            if (tokens != PAD).all():
                runs.append(tuple(tokens.tolist()))
    return runs


def epoch_segments(batches: ExampleBatches, epoch: int) -> list[tuple[int, ...]]:
    per_epoch = batches.batches_per_epoch
    return [run for g in range(epoch * per_epoch, (epoch + 1) * per_epoch) for run in segments(batches.batch(g))]


def test_pack_rows_places_every_example_once_within_seq_len():
    lengths = np.random.default_rng(0).integers(1, 60, 500)
    order = np.random.default_rng(1).permutation(500)
    rows = pack_rows(lengths, order, 64, window=100)
    assert sorted(np.concatenate(rows).tolist()) == list(range(500))
    assert max(lengths[row].sum() for row in rows) <= 64
    assert all((a == b).all() for a, b in zip(rows, pack_rows(lengths, order, 64, window=100), strict=True))
    # Windows: rows never mix examples from different windows of the order.
    window_of = np.empty(500, int)
    window_of[order] = np.arange(500) // 100
    assert all(len(set(window_of[row])) == 1 for row in rows)


def test_best_fit_fills_rows_exactly_when_lengths_allow():
    lengths = np.array([6, 4, 5, 5, 3, 7, 10])  # 40 tokens = four rows of 10
    rows = pack_rows(lengths, np.arange(7), 10)
    assert sorted(sorted(lengths[row].tolist()) for row in rows) == [[3, 7], [4, 6], [5, 5], [10]]


def test_packed_batch_layout():
    examples = make_examples([5, 3, 9])
    batch = ExampleBatches(examples, seq_len=20, batch_size=1, seed=0).batch(0)
    # Best-fit decreasing puts the longest first: 9, 5, then 3 tokens, then 3 of padding.
    assert batch["document_ids"].tolist() == [[0] * 9 + [1] * 5 + [2] * 3 + [3] * 3]
    assert batch["position_ids"].tolist() == [list(range(9)) + list(range(5)) + list(range(3)) + list(range(3))]
    expected = np.concatenate([examples[2].labels, examples[0].labels, examples[1].labels, [-100] * 3])
    assert batch["labels"].tolist() == [expected.tolist()]
    assert batch["input_ids"][0, 17:].tolist() == [PAD] * 3
    assert batch["input_ids"].dtype == np.int64 and batch["labels"].dtype == np.int64
    assert count_trained_tokens(batch) == sum(int((e.labels != -100).sum()) for e in examples)


def test_rows_of_one_example_need_no_document_mask():
    examples = make_examples([15, 14, 16])  # no two fit together in 20 tokens
    batches = ExampleBatches(examples, seq_len=20, batch_size=3, seed=0)
    batch = batches.batch(0)
    assert batch["document_ids"] is None and batch["position_ids"] is None
    assert batch["input_ids"].shape == (3, 20) and (batch["labels"][batch["input_ids"] == PAD] == -100).all()


def test_rows_longer_than_seq_len_hold_more_examples_each_at_most_seq_len():
    examples = make_examples([15, 14, 16, 12])  # in rows of 20: one example a row
    assert len(ExampleBatches(examples, seq_len=20, batch_size=4, seed=0).rows) == 4
    batches = ExampleBatches(examples, seq_len=20, batch_size=4, seed=0, row_len=40)
    assert [len(row) for row in batches.rows] == [2, 2]
    batch = batches.batch(0)
    assert batch["input_ids"].shape == (2, 40)
    assert sorted(segments(batch)) == sorted(tuple(e.input_ids.tolist()) for e in examples)
    assert batch["position_ids"].max() < 20  # every position, padding included, stays below seq_len
    assert packing_stats(batches).non_pad_fraction == 57 / 80
    shorter = batches.with_row_len(20)
    assert [r.tolist() for r in shorter.rows] == [r.tolist() for r in ExampleBatches(examples, seq_len=20,
                                                                                     batch_size=4, seed=0).rows]
    with pytest.raises(ValueError, match="examples of up to 20"):
        ExampleBatches(examples, seq_len=20, batch_size=1, seed=0, row_len=16)
    assert packed_row_length(20, None) == 20 and packed_row_length(20, 40) == 40
    with pytest.raises(UserError, match=r"sft.pack_length \(16\) is shorter than data.seq_len \(20\)"):
        packed_row_length(20, 16)


def test_every_example_once_per_epoch_and_epochs_reshuffle():
    examples = make_examples(np.random.default_rng(2).integers(2, 30, 200), seed=3)
    batches = ExampleBatches(examples, seq_len=64, batch_size=4, seed=11, window=50)
    everything = Counter(tuple(e.input_ids.tolist()) for e in examples)
    first, second = epoch_segments(batches, 0), epoch_segments(batches, 1)
    assert Counter(first) == everything and Counter(second) == everything
    assert first != second
    assert len(batches.batch(batches.batches_per_epoch - 1)["input_ids"]) <= 4  # last batch kept


def test_resume_by_index_gives_identical_batches():
    examples = make_examples(np.random.default_rng(4).integers(2, 30, 120))
    for packing in (True, False):
        run = ExampleBatches(examples, seq_len=64, batch_size=4, seed=5, packing=packing)
        seen = [run.batch(g) for g in range(2 * run.batches_per_epoch + 3)]
        resumed = ExampleBatches(examples, seq_len=64, batch_size=4, seed=5, packing=packing)
        for g in (2 * run.batches_per_epoch + 2, 1, run.batches_per_epoch + 7):
            again = resumed.batch(g)
            for key, value in seen[g].items():
                assert (value is None and again[key] is None) or np.all(value == again[key]), (g, key)
        other_seed = ExampleBatches(examples, seq_len=64, batch_size=4, seed=6, packing=packing)
        assert segments(other_seed.batch(0)) != segments(seen[0])


def test_padding_mode_pads_to_a_multiple_of_eight():
    examples = make_examples([5, 11, 3, 9, 7], seed=1)
    batches = ExampleBatches(examples, seq_len=64, batch_size=2, seed=0, packing=False, pad_id=PAD)
    assert batches.batches_per_epoch == 3
    for g in range(3):
        batch = batches.batch(g)
        lengths = (batch["input_ids"] != PAD).sum(axis=1)
        assert batch["input_ids"].shape[1] == -(-lengths.max() // 8) * 8
        assert batch["document_ids"] is None and batch["position_ids"] is None
        for row, length in enumerate(lengths):
            assert (batch["labels"][row, length:] == -100).all()
    assert Counter(epoch_segments(batches, 0)) == Counter(tuple(e.input_ids.tolist()) for e in examples)
    capped = ExampleBatches(make_examples([13]), seq_len=13, batch_size=1, seed=0, packing=False)
    assert capped.batch(0)["input_ids"].shape == (1, 13)  # rounding never passes seq_len


def test_dataset_weights_repeat_and_subsample():
    examples = make_examples([4] * 30)
    dataset_ids = [0] * 10 + [1] * 20
    batches = ExampleBatches(examples, seq_len=8, batch_size=5, seed=0, packing=False,
                             dataset_ids=dataset_ids, weights=[2.0, 0.5])
    order = batches.example_order(0)
    assert len(order) == 30 and (order < 10).sum() == 20 and (order >= 10).sum() == 10
    assert Counter(order[order < 10].tolist()) == dict.fromkeys(range(10), 2)


def test_examples_longer_than_seq_len_are_refused():
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        ExampleBatches(make_examples([4, 9]), seq_len=8, batch_size=1, seed=0)


def test_packing_stats_count_tokens_and_padding():
    examples = make_examples([6, 4, 5, 5, 3, 7, 10])
    stats = packing_stats(ExampleBatches(examples, seq_len=10, batch_size=2, seed=0, window=7))
    assert (stats.num_examples, stats.num_rows, stats.num_tokens, stats.num_slots) == (7, 4, 40, 40)
    assert stats.non_pad_fraction == 1.0 and stats.examples_per_row == 7 / 4
    assert stats.num_trained_tokens == sum(int((e.labels != -100).sum()) for e in examples)
    padded = packing_stats(ExampleBatches(examples, seq_len=10, batch_size=7, seed=0, packing=False))
    assert (padded.num_rows, padded.num_slots, padded.examples_per_row) == (7, 70, 1.0)


def test_packing_wastes_little_on_chat_like_lengths():
    # Log-normal lengths, median ~150 tokens, capped at seq_len: typical of instruction data.
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(150), 0.8, 3000).astype(int), 8, 1024)
    order = rng.permutation(3000)
    rows = pack_rows(lengths, order, 1024)
    assert lengths.sum() / (len(rows) * 1024) > 0.97


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(PRESETS["tiny"].with_overrides(vocab_size=256)).eval()


def to_torch(batch):
    return {key: None if value is None else torch.from_numpy(value) for key, value in batch.items()
            if not isinstance(value, int)}


def only(batch, keep: np.ndarray):
    """The batch with labels kept only where `keep` is true."""
    return {**batch, "labels": np.where(keep, batch["labels"], -100)}


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss_sum, num_tokens, _ = ChatSft()(model, to_torch(batch))
    loss_sum.backward()
    return loss_sum.detach(), int(num_tokens), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_an_example_has_the_same_loss_and_gradient_packed_as_alone(model):
    examples = make_examples([21, 17, 25], seed=7)
    packed = ExampleBatches(examples, seq_len=64, batch_size=1, seed=0).batch(0)
    assert packed["document_ids"][0].max() == 3  # three examples and padding in one row
    logits_packed = model(torch.from_numpy(packed["input_ids"]), document_ids=torch.from_numpy(packed["document_ids"]),
                          position_ids=torch.from_numpy(packed["position_ids"]))
    for document in range(3):
        in_document = packed["document_ids"] == document
        example = examples[[21, 17, 25].index(int(in_document.sum()))]
        alone = ExampleBatches([example], seq_len=64, batch_size=1, seed=0).batch(0)
        assert alone["document_ids"] is None  # alone takes the causal fast path
        loss_p, tokens_p, grads_p = loss_and_grads(model, only(packed, in_document))
        loss_a, tokens_a, grads_a = loss_and_grads(model, alone)
        assert tokens_p == tokens_a == int((example.labels != -100).sum())
        torch.testing.assert_close(loss_p, loss_a, rtol=0, atol=1e-5)
        for name in grads_a:
            torch.testing.assert_close(grads_p[name], grads_a[name], rtol=1e-4, atol=1e-5, msg=name)
        logits_alone = model(torch.from_numpy(alone["input_ids"]))[0, :len(example.input_ids)]
        torch.testing.assert_close(logits_packed[0][torch.from_numpy(in_document[0])], logits_alone,
                                   rtol=0, atol=1e-5)


def test_without_the_document_mask_packing_would_change_the_loss(model):
    # The check above can fail: dropping the mask lets later examples see earlier ones.
    examples = make_examples([21, 17, 25], seed=7)
    packed = ExampleBatches(examples, seq_len=64, batch_size=1, seed=0).batch(0)
    later = packed["document_ids"] == 1
    example = examples[[21, 17, 25].index(int(later.sum()))]
    alone = ExampleBatches([example], seq_len=64, batch_size=1, seed=0).batch(0)
    leaky = {**only(packed, later), "document_ids": None, "position_ids": None}
    with torch.no_grad():
        leaky_loss = ChatSft()(model, to_torch(leaky)).loss_sum
        alone_loss = ChatSft()(model, to_torch(alone)).loss_sum
    assert abs(leaky_loss.item() - alone_loss.item()) > 1e-3


def test_a_long_row_with_one_example_keeps_positions_inside_the_rotary_table(model):
    # tiny's rotary table has 256 positions; rows of 300 hold one example each (200 + 190 > 300).
    examples = make_examples([200, 190], seed=3)
    batch = ExampleBatches(examples, seq_len=256, batch_size=2, seed=0, row_len=300).batch(0)
    assert batch["document_ids"] is None and batch["position_ids"].max() < 256
    loss_long, tokens_long, _ = loss_and_grads(model, batch)
    loss_alone, tokens_alone, _ = loss_and_grads(model, ExampleBatches(examples, seq_len=256, batch_size=2,
                                                                       seed=0).batch(0))
    assert tokens_long == tokens_alone
    torch.testing.assert_close(loss_long, loss_alone, rtol=1e-6, atol=1e-4)

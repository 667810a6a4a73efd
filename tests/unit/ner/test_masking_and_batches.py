"""MLM masking (rates, determinism, specials, whole words) and length-grouped sentence batches."""

import numpy as np

from tempering.data.masking import IGNORE_INDEX, Masking
from tempering.data.ner.alignment import AlignedSentence
from tempering.data.ner.batches import SentenceBatches, SentenceEvalSet
from tempering.tokenizer.encoder_tokens import with_mask_token


def test_bert_masking_rates_specials_and_determinism(bpe):
    tokenizer, added = with_mask_token(bpe)
    assert added and tokenizer.tokenizer.token_to_id("<|mask|>") == bpe.vocab_size
    masking = Masking.for_tokenizer(tokenizer, tokenizer.vocab_size - 1, tokenizer.vocab_size, 0.15, False)
    tokens = np.random.default_rng(0).integers(30, tokenizer.vocab_size - 1, (64, 256))
    tokens[:, ::50] = tokenizer.eos_id  # specials are never selected
    inputs, labels = masking.apply(tokens, np.random.default_rng([1, 2]))
    selected = labels != IGNORE_INDEX
    assert abs(selected.mean() - 0.15 * (1 - 1 / 50)) < 0.01
    assert not selected[:, ::50].any()
    assert (labels[selected] == tokens[selected]).all() and (inputs[~selected] == tokens[~selected]).all()
    masked = inputs[selected] == tokenizer.vocab_size - 1
    unchanged = inputs[selected] == tokens[selected]
    assert abs(masked.mean() - 0.8) < 0.02 and abs(unchanged.mean() - 0.1) < 0.02  # the rest random (~0.1)
    again = masking.apply(tokens, np.random.default_rng([1, 2]))
    assert (again[0] == inputs).all() and (again[1] == labels).all()


def test_whole_word_masking_selects_every_piece_of_a_word(bpe):
    tokenizer, _ = with_mask_token(bpe)
    masking = Masking.for_tokenizer(tokenizer, tokenizer.vocab_size - 1, tokenizer.vocab_size, 0.3, True)
    text = " ".join(["extraordinarily", "unbelievable", "comprehensively", "a"] * 30)
    tokens = np.array([tokenizer.encode(text)[:200]])
    _, labels = masking.apply(tokens, np.random.default_rng(3))
    selected = labels[0] != IGNORE_INDEX
    starts = masking.word_start[tokens[0]]
    word = np.cumsum(starts)
    for index in np.unique(word):
        members = selected[word == index]
        assert members.all() or not members.any()
    assert 0 < selected.mean() < 0.6


def sentence(length: int) -> AlignedSentence:
    ids = np.arange(length, dtype=np.int64)
    return AlignedSentence(ids, np.zeros(length, np.int64), np.ones(length, bool), length, 0)


def test_length_grouped_batches_cover_an_epoch_once_and_are_deterministic():
    sentences = [sentence(3 + (i * 7) % 40) for i in range(230)]
    batches = SentenceBatches(sentences, batch_size=8, seed=5, pad_id=0, group_by_length=True)
    assert batches.batches_per_epoch == 29
    epoch = batches.epoch_batches(0)
    assert sorted(np.concatenate(epoch).tolist()) == list(range(230))
    again = SentenceBatches(sentences, batch_size=8, seed=5, pad_id=0, group_by_length=True)
    assert [b.tolist() for b in again.epoch_batches(0)] == [b.tolist() for b in epoch]
    assert [b.tolist() for b in batches.epoch_batches(1)] != [b.tolist() for b in epoch]
    # Grouping: padding is a small share of the batch slots.
    slots = sum(len(b) * max(len(sentences[i].input_ids) for i in b) for b in epoch)
    assert sum(len(s.input_ids) for s in sentences) / slots > 0.9
    batch = batches.batch(29 + 3)  # epoch 1, batch 3
    assert batch["input_ids"].shape[0] == len(batches.epoch_batches(1)[3])


def test_append_segments_train_old_then_new_and_padding_masks():
    sentences = [sentence(4)] * 10 + [sentence(6), sentence(2)] * 5
    batches = SentenceBatches(sentences, batch_size=4, seed=0, pad_id=9, segments=[10, 10])
    epoch = batches.epoch_batches(0)
    assert all(i < 10 for b in epoch[:3] for i in b) and all(i >= 10 for b in epoch[3:] for i in b)
    ragged = SentenceEvalSet([sentence(6), sentence(2)], pad_id=9)
    [batch] = list(ragged.eval_batches(4))
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0]]
    assert batch["input_ids"][1].tolist() == [0, 1, 9, 9, 9, 9] and batch["labels"][1, 2:].tolist() == [-100] * 4
    assert next(SentenceEvalSet([sentence(3)] * 2, pad_id=0).eval_batches(2))["attention_mask"] is None


def test_random_batches_cover_an_epoch_once_in_the_seeded_order_and_pad_more():
    from tempering.config.schema import NerConfig

    assert NerConfig().group_by_length is False
    sentences = [sentence(3 + (i * 7) % 40) for i in range(230)]
    grouped = SentenceBatches(sentences, batch_size=8, seed=5, pad_id=0, group_by_length=True).epoch_batches(0)
    random = SentenceBatches(sentences, batch_size=8, seed=5, pad_id=0).epoch_batches(0)
    order = np.random.default_rng([5, 0, 0]).permutation(230)
    assert np.concatenate(random).tolist() == order.tolist()  # the epoch's shuffled order, cut in batches
    assert [len(b) for b in random] == [8] * 28 + [6]

    def fill(epoch):
        return sum(len(s.input_ids) for s in sentences) / sum(
            len(b) * max(len(sentences[i].input_ids) for i in b) for b in epoch)

    assert fill(random) < 0.75 < 0.9 < fill(grouped)

"""Words → word pieces: every piece belongs to the right word, labels sit on first pieces, exactly."""

import numpy as np
import pytest

from tempering.data.ner.alignment import IGNORE_INDEX, align_sentences, word_of_each_char
from tempering.data.ner.labels import continuation_ids
from tempering.data.ner.records import Sentence
from tempering.tokenizer.encoder_tokens import encoder_tokens

# Split words, punctuation, contractions, accents, CJK, emoji, a symbol, digits, a special-token string.
TRICKY = Sentence(
    words=("Zoë", "Müller-Lüdenscheidt", "wasn't", "in", "São", "Paulo", ",", "日本語", "🙂", "—", "e.g.",
           "3.14159", "(", "x86_64", ")", "naïve", "<|eos|>", "."),
    tags=("B-PER", "I-PER", "O", "O", "B-GPE", "I-GPE", "O", "B-GPE", "O", "O", "O", "B-CARDINAL", "O", "B-ORG",
          "O", "O", "O", "O"),
    where="test:1")
LABELS = ("O", "B-CARDINAL", "I-CARDINAL", "B-GPE", "I-GPE", "B-ORG", "I-ORG", "B-PER", "I-PER")
INDEX = {label: i for i, label in enumerate(LABELS)}


def expected_pieces(tokenizer, words) -> list[list[int]]:
    """Each word encoded on its own as it appears in running text (after a space, but the first)."""
    return [tokenizer.tokenizer.encode(("" if i == 0 else " ") + word, add_special_tokens=False).ids
            for i, word in enumerate(words)]


@pytest.fixture(params=["bpe", "wordpiece"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def test_every_piece_lands_on_its_word_and_the_label_on_the_first_piece(tokenizer):
    tokens = encoder_tokens(tokenizer)
    [aligned], refused = align_sentences([TRICKY], INDEX, tokenizer, tokens, max_len=512)
    assert refused == []
    pieces = expected_pieces(tokenizer, TRICKY.words)
    assert aligned.input_ids.tolist() == [tokens.start_id, *[i for word in pieces for i in word], tokens.end_id]
    starts = np.cumsum([0] + [len(word) for word in pieces])[:-1] + 1  # +1: the start token
    assert np.flatnonzero(aligned.word_starts).tolist() == starts.tolist()
    expected_labels = np.full(len(aligned.input_ids), IGNORE_INDEX)
    expected_labels[starts] = [INDEX[tag] for tag in TRICKY.tags]
    assert aligned.labels.tolist() == expected_labels.tolist()
    assert max(len(word) for word in pieces) > 1  # split words are exercised


def test_a_bare_separator_piece_starts_its_word(bpe):
    # Byte-level BPE without a merge for " 日" emits the space alone: that piece is the word's first.
    pieces = expected_pieces(bpe, TRICKY.words)
    bare = [i for i, word in enumerate(pieces) if i and bpe.decode(word[:1]) == " "]
    assert bare, "no word starts with a bare space piece in this vocabulary"
    [aligned], _ = align_sentences([TRICKY], INDEX, bpe, encoder_tokens(bpe), max_len=512)
    first = int(np.flatnonzero(aligned.word_starts)[bare[0]])
    assert bpe.decode([int(aligned.input_ids[first])]) == " "
    assert aligned.labels[first] == INDEX[TRICKY.tags[bare[0]]]


def test_wordpiece_frames_rows_with_cls_and_sep(wordpiece):
    [aligned], _ = align_sentences([TRICKY], INDEX, wordpiece, encoder_tokens(wordpiece), max_len=512)
    vocab = wordpiece.tokenizer
    assert (vocab.id_to_token(int(aligned.input_ids[0])), vocab.id_to_token(int(aligned.input_ids[-1]))) == \
        ("[CLS]", "[SEP]")


def test_label_all_tokens_puts_i_after_b_on_later_pieces(bpe):
    [aligned], _ = align_sentences([TRICKY], INDEX, bpe, encoder_tokens(bpe), max_len=512, label_all_tokens=True,
                                   continuation=continuation_ids(LABELS))
    pieces = expected_pieces(bpe, TRICKY.words)
    position, expected = 1, []
    for word, tag in zip(pieces, TRICKY.tags, strict=True):
        later = tag.replace("B-", "I-") if tag != "O" else "O"
        expected += [INDEX[tag]] + [INDEX[later]] * (len(word) - 1)
        position += len(word)
    assert aligned.labels[1:-1].tolist() == expected
    assert aligned.word_starts.sum() == len(TRICKY.words)


def test_truncation_keeps_start_and_end_and_counts_the_words_cut(bpe):
    [aligned], _ = align_sentences([TRICKY], INDEX, bpe, encoder_tokens(bpe), max_len=8)
    assert len(aligned.input_ids) == 8 and aligned.input_ids[-1] == encoder_tokens(bpe).end_id
    assert aligned.num_truncated_words == len(TRICKY.words) - int(aligned.word_starts.sum())
    assert aligned.num_truncated_words > 0


def test_a_word_with_no_piece_of_its_own_is_refused_naming_it(wordpiece):
    # The BERT normalizer deletes a zero-width space: the word has no piece left.
    sentence = Sentence(("ok", "\u200b", "fine"), ("O", "O", "O"), "file.jsonl:7")
    aligned, refused = align_sentences([sentence], INDEX, wordpiece, encoder_tokens(wordpiece), max_len=64)
    assert aligned == [] and refused == [("file.jsonl:7", "word 1 ('\\u200b') has no word piece of its own")]


def test_separator_spaces_belong_to_the_next_word():
    text, owner = word_of_each_char(("ab", "c", "de"))
    assert text == "ab c de" and owner.tolist() == [0, 0, 1, 1, 2, 2, 2]

"""Words → word pieces with the run's tokenizer, and each word's label onto its pieces.

The words are joined with single spaces and encoded as one text, so every word is tokenized
as it appears in running text (a byte-level BPE gives a mid-sentence word its leading-space
piece, as in pretraining); the tokenizer's character offsets then say which word each piece
came from. A separator space belongs to the word after it, so a piece that is only the space
before a word (byte-level BPE does that before some characters) is that word's first piece.
The label goes on the first piece of each word and the others are ignored (-100), or with
`label_all_tokens` on every piece (B-X becoming I-X after the first). Every row is framed by
the start and end tokens ([CLS] … [SEP], or <|bos|> … <|eos|>). Written here because the
offset bookkeeping is the contract: transformers' `word_ids()` needs a slow/fast tokenizer
pair and is not defined for pre-tokenized byte-level input without `add_prefix_space`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempering.tokenizer import TokenizerBundle
from tempering.tokenizer.encoder_tokens import EncoderTokens

IGNORE_INDEX = -100


@dataclass(frozen=True)
class AlignedSentence:
    """One sentence as the model sees it: ids, a label per position (-100 = none), first pieces marked."""

    input_ids: np.ndarray  # (T,) int64, framed by start and end tokens
    labels: np.ndarray  # (T,) int64
    word_starts: np.ndarray  # (T,) bool: the first piece of each (kept) word
    num_words: int  # words of the sentence
    num_truncated_words: int  # words cut off by the length limit


class AlignmentError(ValueError):
    """A sentence whose words cannot all be given a piece of their own."""


def word_of_each_char(words: tuple[str, ...] | list[str]) -> tuple[str, np.ndarray]:
    """The joined text and, for each character, the index of its word (a separator space: the next word's)."""
    text = " ".join(words)
    owner = np.empty(len(text), np.int64)
    position = 0
    for index, word in enumerate(words):
        if index:
            owner[position] = index  # the space before word `index`
            position += 1
        owner[position:position + len(word)] = index
        position += len(word)
    return text, owner


def piece_words(offsets: list[tuple[int, int]], owner: np.ndarray) -> list[int]:
    """The word index of each piece, from its character offsets."""
    last = len(owner) - 1
    return [int(owner[min(start, last)]) for start, _ in offsets]


def align(words: tuple[str, ...], label_ids: list[int], ids: list[int], offsets: list[tuple[int, int]],
          tokens: EncoderTokens, *, max_len: int, label_all_tokens: bool = False,
          continuation: list[int] | None = None) -> AlignedSentence:
    """Frame the pieces of one sentence and place its labels; AlignmentError if a word has no piece of its own."""
    _, owner = word_of_each_char(words)
    owners = piece_words(offsets, owner)
    firsts = np.full(len(words), -1)
    for position, word in enumerate(owners):
        if firsts[word] < 0:
            firsts[word] = position
    missing = np.flatnonzero(firsts < 0)
    if len(missing):
        raise AlignmentError(f"word {int(missing[0])} ({words[missing[0]]!r}) has no word piece of its own")
    budget = max_len - 2  # room left by the start and end tokens
    num_pieces = min(len(ids), budget)
    labels = np.full(num_pieces + 2, IGNORE_INDEX, np.int64)
    word_starts = np.zeros(num_pieces + 2, bool)
    for position in range(num_pieces):
        word = owners[position]
        if firsts[word] == position:
            labels[position + 1] = label_ids[word]
            word_starts[position + 1] = True
        elif label_all_tokens:
            label = label_ids[word]
            labels[position + 1] = continuation[label] if continuation else label
    input_ids = np.array([tokens.start_id, *ids[:num_pieces], tokens.end_id], np.int64)
    return AlignedSentence(input_ids, labels, word_starts, len(words), int((firsts >= num_pieces).sum()))


def align_sentences(sentences, label_index: dict[str, int], tokenizer: TokenizerBundle, tokens: EncoderTokens, *,
                    max_len: int, label_all_tokens: bool = False,
                    continuation: list[int] | None = None) -> tuple[list[AlignedSentence], list[tuple[str, str]]]:
    """Align many sentences (encoded in one parallel batch); return them and (where, reason) for each refused one."""
    texts = [" ".join(sentence.words) for sentence in sentences]
    encodings = tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False)
    aligned, refused = [], []
    for sentence, encoding in zip(sentences, encodings, strict=True):
        try:
            aligned.append(align(sentence.words, [label_index[t] for t in sentence.tags], encoding.ids,
                                 encoding.offsets, tokens, max_len=max_len, label_all_tokens=label_all_tokens,
                                 continuation=continuation))
        except AlignmentError as error:
            refused.append((sentence.where, str(error)))
    return aligned, refused

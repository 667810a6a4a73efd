"""Masked-LM inputs from packed token windows: BERT's 15 % / 80-10-10 masking, optionally of whole words.

Wraps the same token windows the decoder trains on (`temper prep` shards or raw text) and
masks each micro-batch on the host with a generator seeded by (seed, micro-batch index), so
the masks are a pure function of the run's seed and data position and a resume reads the
very masks it would have. Of the positions selected with probability `mask_probability`
(never a special token), 80 % become the mask token, 10 % a random token, 10 % stay; the loss
is on the selected positions only. With whole-word masking a word is selected as a unit: a
word starts at a byte-level piece that begins with a space or newline (`Ġ`, `Ċ`), or at a
WordPiece that does not begin with `##`. Written here rather than with transformers'
`DataCollatorForLanguageModeling`: that needs transformers at run time and torch's global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tempering.tokenizer import TokenizerBundle

IGNORE_INDEX = -100
_EVAL_TAG = 0xE7A1  # seed tag of validation masks, apart from training ones
_BYTE_LEVEL_WORD_STARTS = ("Ġ", "Ċ")  # GPT-2 byte-level renderings of " " and "\n"


@dataclass(frozen=True)
class Masking:
    """How to mask: the mask id, the vocabulary random replacements come from, what is never selected."""

    mask_id: int
    vocab_size: int
    probability: float
    special: np.ndarray  # (V,) bool: never selected
    word_start: np.ndarray | None  # (V,) bool for whole-word masking, else None

    @classmethod
    def for_tokenizer(cls, tokenizer: TokenizerBundle, mask_id: int, vocab_size: int, probability: float,
                      whole_word: bool) -> Masking:
        """The masking of a tokenizer's vocabulary (its added/special tokens are never selected)."""
        special = np.zeros(vocab_size, bool)
        added = tokenizer.tokenizer.get_added_tokens_decoder()
        special[[i for i, token in added.items() if token.special and i < vocab_size]] = True
        word_start = _word_starts(tokenizer, vocab_size) if whole_word else None
        return cls(mask_id, vocab_size, probability, special, word_start)

    def apply(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) for (B, T) token ids; labels are -100 where nothing is predicted."""
        candidates = ~self.special[tokens]
        if self.word_start is None:
            selected = (rng.random(tokens.shape) < self.probability) & candidates
        else:
            selected = self._whole_words(tokens, candidates, rng)
        if not selected.any() and candidates.any():  # never a batch with nothing to predict
            flat = np.flatnonzero(candidates)
            selected.flat[flat[rng.integers(len(flat))]] = True
        labels = np.where(selected, tokens, IGNORE_INDEX)
        roll = rng.random(tokens.shape)
        inputs = np.where(selected & (roll < 0.8), self.mask_id, tokens)
        random_tokens = rng.integers(0, self.vocab_size, tokens.shape)
        inputs = np.where(selected & (roll >= 0.8) & (roll < 0.9), random_tokens, inputs)
        return inputs.astype(np.int64), labels.astype(np.int64)

    def _whole_words(self, tokens: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        starts = self.word_start[tokens] | ~candidates
        starts[:, 0] = True
        word_ids = np.cumsum(starts, axis=1) - 1  # (B, T): index of each token's word within its row
        chosen = rng.random((tokens.shape[0], tokens.shape[1])) < self.probability  # one draw per word slot
        return np.take_along_axis(chosen, word_ids, axis=1) & candidates


def _word_starts(tokenizer: TokenizerBundle, vocab_size: int) -> np.ndarray:
    """(V,) bool: whether a vocabulary entry begins a word (WordPiece: not '##'; byte-level BPE: a leading space)."""
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    word_piece = type(tokenizer.tokenizer.model).__name__ == "WordPiece"
    starts = np.ones(vocab_size, bool)
    for token, index in vocab.items():
        if index < vocab_size:
            starts[index] = not token.startswith("##") if word_piece else token.startswith(_BYTE_LEVEL_WORD_STARTS)
    for index in tokenizer.tokenizer.get_added_tokens_decoder():
        if index < vocab_size:
            starts[index] = True
    return starts


def _windows(batch: dict) -> np.ndarray:
    """The (B, T) inputs of a packed (B, T+1) window batch (the extra next-token column is a decoder's)."""
    return batch["tokens"][:, :-1]


class MaskedBatches:
    """Training micro-batches of packed windows, masked per micro-batch."""

    def __init__(self, batches, masking: Masking, seed: int):
        self.batches, self.masking, self.seed = batches, masking, seed
        self.batches_per_epoch = batches.batches_per_epoch

    def batch(self, micro_batch: int) -> dict:
        """input_ids and labels (B, T) of global micro-batch `micro_batch`; num_tokens counts every input."""
        tokens = _windows(self.batches.batch(micro_batch))
        inputs, labels = self.masking.apply(tokens, np.random.default_rng([self.seed, micro_batch]))
        return {"input_ids": inputs, "labels": labels, "num_tokens": int(tokens.size)}


class MaskedEvalSet:
    """A validation set of packed windows, masked the same way at every evaluation."""

    def __init__(self, eval_set, masking: Masking, seed: int):
        self.eval_set, self.masking, self.seed = eval_set, masking, seed

    def eval_batches(self, batch_size: int):
        """Yield every masked validation batch once."""
        for index, batch in enumerate(self.eval_set.eval_batches(batch_size)):
            tokens = _windows(batch)
            inputs, labels = self.masking.apply(tokens, np.random.default_rng([self.seed, _EVAL_TAG, index]))
            yield {"input_ids": inputs, "labels": labels}

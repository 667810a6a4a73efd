"""Train a byte-level BPE tokenizer with Hugging Face `tokenizers`.

Byte-level with the full 256-byte initial alphabet, so any text is encodable and decodes
back exactly. No normalizer (prep applies NFC) and no post-processor (encoding never adds
bos/eos; data stages place them where the objective needs them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tempering.errors import UserError
from tempering.tokenizer.bounded import split_long_text
from tempering.tokenizer.bundle import TokenizerBundle
from tempering.tokenizer.files import check_output_dir
from tempering.tokenizer.special import MIN_VOCAB_SIZE, SPECIAL_TOKENS
from tempering.tracking.console import console


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    output_dir: Path,
    *,
    min_frequency: int = 2,
    length: int | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
) -> TokenizerBundle:
    """Learn a byte-level BPE vocabulary of `vocab_size` tokens (specials included) and save it."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"vocab_size {vocab_size} is too small: it must exceed {len(SPECIAL_TOKENS)} special "
            f"tokens + 256 bytes; use at least {MIN_VOCAB_SIZE}"
        )
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite=overwrite)  # fail before training, not after
    tokenizer = _new_byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    counter = _CharCounter(texts)
    tokenizer.train_from_iterator(counter, trainer=trainer, length=length)
    if counter.num_chars == 0:
        raise UserError("no text to train the tokenizer on: every input document was empty")
    learned = tokenizer.get_vocab_size(with_added_tokens=True)
    if learned < vocab_size:
        console.print(f"[yellow]note:[/] the corpus yields only {learned} of the {vocab_size} "
                      f"requested tokens (too little or too repetitive text for min_frequency={min_frequency})")
    bundle = TokenizerBundle.from_tokenizer(tokenizer)
    bundle.save(output_dir, overwrite=overwrite)
    return bundle


def _new_byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


class _CharCounter:
    """Pass texts through (very long ones in pieces, to bound memory) counting characters, to reject an empty corpus."""

    def __init__(self, texts: Iterable[str]):
        self._texts = texts
        self.num_chars = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.num_chars += len(text)
            yield from split_long_text(text)

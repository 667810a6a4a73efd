"""The `mlm` objective — an encoder's masked-LM loss — and what a stage does to train with it.

The loss is the cross-entropy at the selected positions only (their hidden states go through
the MLM head; the other ~85 % never reach the vocabulary projection), summed, so its unit is
the masked token. `prepare_masked_lm` turns a stage's packed LM data into masked batches and
gives the tokenizer a mask token if it has none.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import nn

from tempering.config.schema import Config
from tempering.data.masking import IGNORE_INDEX, MaskedBatches, MaskedEvalSet, Masking
from tempering.tokenizer import TokenizerBundle
from tempering.tokenizer.encoder_tokens import (
    MASK,
    encoder_tokens,
    with_mask_token,
    write_mask_token,
)
from tempering.tracking.console import console
from tempering.training.objective import LossResult, NumpyBatch, Objective, TensorBatch


class MaskedLM(Objective):
    """Cross-entropy of the MLM head at the masked positions."""

    name = "mlm"
    unit = "tokens"  # masked (predicted) tokens
    perplexity = True

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed loss over the positions whose label is not -100, and their count."""
        hidden = model.hidden_states(batch["input_ids"], batch.get("attention_mask"))  # (B, T, D)
        labels = batch["labels"]
        selected = labels != IGNORE_INDEX  # (B, T)
        logits = model.mlm_logits(hidden[selected])  # (N, V): only the predicted positions
        loss = F.cross_entropy(logits.float(), labels[selected], reduction="sum")
        return LossResult(loss, selected.sum())

    def count_units(self, batch: NumpyBatch) -> int:
        """Masked positions (labels != -100)."""
        return int((batch["labels"] != IGNORE_INDEX).sum())


def prepare_masked_lm(config: Config, tokenizer: TokenizerBundle, train_batches, val_sets: dict[str, list]):
    """(tokenizer with a mask token, whether one was added, masked train batches, masked val sets)."""
    tokenizer, added = with_mask_token(tokenizer)
    if added:
        console.print(f"masked LM: added {MASK} to the tokenizer (id {tokenizer.vocab_size - 1}); the run keeps "
                      "its own tokenizer copy")
    masking = Masking.for_tokenizer(tokenizer, encoder_tokens(tokenizer).mask_id, tokenizer.vocab_size,
                                    config.mlm.mask_probability, config.mlm.whole_word_masking)
    seed = config.run.seed
    masked_val = {split: [MaskedEvalSet(s, masking, seed) for s in sets] for split, sets in val_sets.items()}
    return tokenizer, added, MaskedBatches(train_batches, masking, seed), masked_val


def save_run_tokenizer(tokenizer: TokenizerBundle, run_dir: Path) -> Path:
    """The run's own tokenizer dir, its mask token named in tokenizer_config.json; checkpoints copy it."""
    directory = run_dir / "tokenizer"
    tokenizer.save(directory, overwrite=True)
    write_mask_token(directory)
    return directory

"""Next-token objectives: `clm` on packed token windows (pretraining, post-training) and `sft` on chat rows.

Both sum the cross-entropy with the chunked loss (`models/chunked_loss.py`), so the full
(tokens, vocabulary) logits never exist at once, and both count tokens.
"""

from __future__ import annotations

from torch import nn

from tempering.data.example_batches import count_trained_tokens
from tempering.models.chunked_loss import chunked_cross_entropy
from tempering.training.objective import LossResult, NumpyBatch, Objective, TensorBatch


class CausalLM(Objective):
    """Next-token loss summed over every position of packed (B, T+1) token windows."""

    name = "clm"
    unit = "tokens"
    perplexity = True

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed next-token loss of the windows and the number of predicted positions."""
        tokens = batch["tokens"]
        inputs, labels = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        hidden = model.hidden_states(inputs)  # (B, T, D)
        return LossResult(*chunked_cross_entropy(hidden, model.lm_head.weight, labels))

    def count_units(self, batch: NumpyBatch) -> int:
        """Positions that carry a loss in a (B, T+1) window batch: every one."""
        tokens = batch["tokens"]
        return tokens.shape[0] * (tokens.shape[1] - 1)


class ChatSft(Objective):
    """Cross-entropy over the trained (assistant) tokens of packed or padded chat rows."""

    name = "sft"
    unit = "tokens"
    perplexity = True

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed loss over tokens whose label is not -100, and their count."""
        hidden = model.hidden_states(batch["input_ids"], position_ids=batch.get("position_ids"),
                                     document_ids=batch.get("document_ids"))  # (B, T, D)
        return LossResult(*chunked_cross_entropy(hidden, model.lm_head.weight, batch["labels"]))

    def count_units(self, batch: NumpyBatch) -> int:
        """Tokens that carry a loss (labels != -100)."""
        return count_trained_tokens(batch)

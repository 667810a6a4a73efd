"""Next-token objectives: `clm` on packed token windows (pretraining, post-training) and `sft` on chat rows.

Both sum the cross-entropy with the chunked loss (`models/chunked_loss.py`), so the full
(tokens, vocabulary) logits never exist at once, both count tokens, and both add the model's
auxiliary losses (a mixture of experts' router losses) weighted by the trained tokens.
"""

from __future__ import annotations

from torch import nn

from tempering.data.example_batches import count_trained_tokens
from tempering.models.auxiliary import hidden_states_and_auxiliary
from tempering.models.chunked_loss import chunked_cross_entropy
from tempering.training.objective import (
    LossResult,
    NumpyBatch,
    Objective,
    TensorBatch,
    with_auxiliary,
)


class CausalLM(Objective):
    """Next-token loss summed over every position of packed (B, T+1) token windows."""

    name = "clm"
    unit = "tokens"
    perplexity = True

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed next-token loss of the windows and the number of predicted positions."""
        tokens = batch["tokens"]
        inputs, labels = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        hidden, auxiliary = hidden_states_and_auxiliary(model, inputs)  # (B, T, D), router losses (MoE)
        loss_sum, num_tokens = chunked_cross_entropy(hidden, model.lm_head.weight, labels)
        return with_auxiliary(LossResult(loss_sum, num_tokens), auxiliary, num_tokens)

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
        hidden, auxiliary = hidden_states_and_auxiliary(model, batch["input_ids"], position_ids=batch.get("position_ids"),
                                                        document_ids=batch.get("document_ids"),
                                                        padding_mask=batch.get("padding_mask"))  # (B, T, D)
        loss_sum, num_tokens = chunked_cross_entropy(hidden, model.lm_head.weight, batch["labels"], labelled_only=True)
        return with_auxiliary(LossResult(loss_sum, num_tokens), auxiliary, num_tokens)

    def count_units(self, batch: NumpyBatch) -> int:
        """Tokens that carry a loss (labels != -100)."""
        return count_trained_tokens(batch)

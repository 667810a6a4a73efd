"""How many optimizer steps a run takes, from whichever training length the config sets."""

from __future__ import annotations

import math

from tempering.config.schema import TrainingConfig
from tempering.errors import UserError
from tempering.ranks import world_size


def count_total_steps(training: TrainingConfig, batches_per_epoch: int, *, samples_per_batch: float,
                      tokens_per_batch: float | None) -> tuple[int, str]:
    """Optimizer steps for max_steps / epochs / samples / tokens, and which of them set it.

    `samples_per_batch` are sequences (pretraining), examples (SFT) or pairs (DPO);
    `tokens_per_batch` is None where a token budget is not meaningful (padded batches).
    """
    accumulation = training.accumulation_steps * world_size()  # global micro-batches per optimizer step
    if training.max_steps is not None:
        return training.max_steps, "max_steps"
    if training.epochs is not None:
        return max(1, math.ceil(training.epochs * batches_per_epoch / accumulation)), "epochs"
    if training.num_training_samples is not None:
        return max(1, math.ceil(training.num_training_samples / (samples_per_batch * accumulation))), \
            "num_training_samples"
    if training.num_training_tokens is not None:
        if tokens_per_batch is None:
            raise UserError("training.num_training_tokens needs packed sequences; turn packing on or give "
                            "--max-steps / --epochs / training.num_training_samples")
        return max(1, math.ceil(training.num_training_tokens / (tokens_per_batch * accumulation))), \
            "num_training_tokens"
    raise UserError("no training length: give one of --max-steps N, --epochs N, --num-training-tokens N "
                    "(or training.num_training_samples)")

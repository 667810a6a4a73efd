"""Validation loss and perplexity over packed token windows."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn

from tempering.data.packing import PackedSequences


@torch.no_grad()
def evaluate_loss(model: nn.Module, sets: list[PackedSequences], objective, *, batch_size: int,
                  device: torch.device, max_batches: int | None = None,
                  autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> dict:
    """Token-weighted mean loss and perplexity over all windows of all sets, in order.

    `max_batches` caps the batches per set; the last, smaller batch of a set is kept.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = 0
    for sequences in sets:
        num_batches = -(-len(sequences) // batch_size)
        if max_batches is not None:
            num_batches = min(num_batches, max_batches)
        for b in range(num_batches):
            rows = range(b * batch_size, min(len(sequences), (b + 1) * batch_size))
            tokens = torch.from_numpy(np.stack([sequences[i].astype(np.int64) for i in rows])).to(device)
            with autocast():
                loss_sum, num_tokens = objective(model, tokens)
            total_loss += loss_sum.double()
            total_tokens += int(num_tokens)
    model.train(was_training)
    loss = (total_loss / max(total_tokens, 1)).item()
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": total_tokens}

"""Gradient accumulation gives the gradients of one big batch (no mean-of-means)."""

from __future__ import annotations

import torch

from tempering.models.llama.architecture import PRESETS
from tempering.models.llama.model import build_model
from tempering.training.causal_lm import CausalLM
from tempering.training.loop import accumulate_gradients


def gradients(model, micro_batches):
    model.zero_grad(set_to_none=True)
    batches = [{"tokens": tokens} for tokens in micro_batches]
    objective = CausalLM()
    num_tokens = sum(objective.count_units({"tokens": tokens.numpy()}) for tokens in micro_batches)
    loss_sum, _ = accumulate_gradients(model, objective, batches, num_tokens)
    return loss_sum, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_four_micro_batches_of_two_equal_one_batch_of_eight():
    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"].with_overrides(vocab_size=256))
    tokens = torch.randint(0, 256, (8, 33))
    big_loss, big = gradients(model, [tokens])
    small_loss, small = gradients(model, list(tokens.split(2)))
    torch.testing.assert_close(small_loss, big_loss, rtol=1e-6, atol=1e-6)
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=1e-5, atol=1e-7, msg=name)


def test_unequal_token_counts_are_weighted_by_tokens_not_by_batch():
    # A mean of per-micro-batch means would weight the 1-row batch as much as the 3-row one.
    torch.manual_seed(1)
    model = build_model(PRESETS["tiny"].with_overrides(vocab_size=256))
    tokens = torch.randint(0, 256, (4, 17))
    _, whole = gradients(model, [tokens])
    _, split = gradients(model, [tokens[:1], tokens[1:]])
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-7, msg=name)

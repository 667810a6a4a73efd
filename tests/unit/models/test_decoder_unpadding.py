"""Unpadded decoder forwards (padded SFT and DPO batches): the padded forward's numbers on real tokens, less work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempering.data.example_batches import padding_mask
from tempering.models.llama.architecture import PRESETS as DENSE_PRESETS
from tempering.models.llama.model import DecoderLM
from tempering.models.moe.architecture import PRESETS as MOE_PRESETS
from tempering.models.moe.model import MoeDecoderLM
from tempering.models.unpadding import TokenIndex

LENGTHS = [11, 32, 5]  # the second row is full; the others end in padding


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "dense":
        return DecoderLM(DENSE_PRESETS["tiny"])
    arch = MOE_PRESETS["moe_tiny"]
    return MoeDecoderLM(arch)


def padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (len(LENGTHS), max(LENGTHS)), generator=generator)
    mask = torch.from_numpy(padding_mask(LENGTHS, max(LENGTHS)))
    return ids.masked_fill(mask == 0, 0), mask


def forward_and_grads(model, ids, mask, use_mask: bool, checkpointing: bool):
    model.train()
    model.gradient_checkpointing = checkpointing
    model.zero_grad()
    hidden = model.hidden_states(ids, padding_mask=mask if use_mask else None)
    real = mask.bool()
    # A loss on the real positions only, as SFT's (padding is labelled -100 there).
    (model.lm_head(hidden[real]).float().logsumexp(-1).sum()).backward()
    return hidden.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_padding_mask_marks_right_padding_and_is_none_when_nothing_is_padded():
    assert padding_mask([2, 4], 4).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert padding_mask(np.array([4, 4]), 4) is None


def test_token_index_round_trips_the_real_tokens():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    index = TokenIndex.of(mask)
    assert index.flat.tolist() == [0, 1, 3] and index.positions().tolist() == [0, 1, 0]
    rows = torch.tensor([[1.0], [2.0], [3.0]])
    assert index.pad(rows).squeeze(-1).tolist() == [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]
    assert torch.equal(index.unpad(index.pad(rows)), rows)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_unpadded_forward_equals_the_padded_one_on_real_tokens(kind, checkpointing):
    model = build(kind)
    ids, mask = padded_batch(model.arch.vocab_size)
    padded_hidden, padded_grads = forward_and_grads(model, ids, mask, False, checkpointing)
    hidden, grads = forward_and_grads(model, ids, mask, True, checkpointing)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], padded_hidden[real], atol=1e-5, rtol=1e-5)
    assert not hidden[~real].any()  # padding is not computed
    assert grads.keys() == padded_grads.keys()  # and every parameter's gradient is the padded forward's
    for name, grad in padded_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_moe_router_losses_count_real_tokens_only():
    model = build("moe")
    ids, mask = padded_batch(model.arch.vocab_size)
    _, stats = model._run(ids, padding_mask=mask)
    assert all(s.num_tokens == sum(LENGTHS) for s in stats)
    _, padded_stats = model._run(ids)
    assert all(s.num_tokens == ids.numel() for s in padded_stats)


def test_a_padding_mask_with_a_kv_cache_is_refused():
    model = build("dense").eval()
    ids, mask = padded_batch(model.arch.vocab_size)
    with pytest.raises(ValueError, match="KV cache"):
        model.hidden_states(ids, padding_mask=mask, kv_cache=model.new_kv_cache(len(LENGTHS)))

"""Chunked linear + cross-entropy equals the plain computation, in value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from tempering.models.chunked_loss import chunked_cross_entropy


def _inputs(num_rows=50, width=32, vocab=300, seed=0):
    torch.manual_seed(seed)
    hidden = torch.randn(2, num_rows // 2, width, requires_grad=True)
    weight = (torch.randn(vocab, width) * 0.2).requires_grad_()
    labels = torch.randint(0, vocab, (2, num_rows // 2))
    labels[0, :3] = -100
    labels[1, -4:] = -100
    return hidden, weight, labels


def _plain(hidden, weight, labels):
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum", ignore_index=-100)


@pytest.mark.parametrize("labelled_only", [False, True], ids=["every-row", "labelled-only"])
@pytest.mark.parametrize("chunk_size", [7, 16, 1024])
def test_value_and_grads_equal_plain_cross_entropy(chunk_size, labelled_only):
    hidden, weight, labels = _inputs()
    loss_sum, num_tokens = chunked_cross_entropy(hidden, weight, labels, chunk_size=chunk_size,
                                                 labelled_only=labelled_only)
    assert num_tokens.item() == 50 - 7
    (loss_sum / num_tokens).backward()
    chunked_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = _plain(hidden, weight, labels)
    (reference / 43).backward()
    torch.testing.assert_close(loss_sum, reference, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(chunked_grads[0], hidden.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked_grads[1], weight.grad, atol=1e-6, rtol=1e-5)
    if labelled_only:  # the unlabelled rows' hidden states get exactly no gradient
        assert not chunked_grads[0][labels == -100].any()


def test_works_without_grad_and_for_frozen_head():
    hidden, weight, labels = _inputs()
    with torch.no_grad():
        loss_sum, _ = chunked_cross_entropy(hidden, weight, labels, chunk_size=16)
    torch.testing.assert_close(loss_sum, _plain(hidden, weight, labels).detach(), atol=1e-5, rtol=1e-6)
    frozen = weight.detach()
    loss_sum, _ = chunked_cross_entropy(hidden, frozen, labels, chunk_size=16)
    loss_sum.backward()
    hidden_grad = hidden.grad.clone()
    hidden.grad = None
    _plain(hidden, frozen, labels).backward()
    torch.testing.assert_close(hidden_grad, hidden.grad, atol=1e-6, rtol=1e-5)


def test_bf16_autocast_is_close_to_fp32():
    hidden, weight, labels = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_sum, _ = chunked_cross_entropy(hidden, weight, labels, chunk_size=16)
    loss_sum.backward()
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    reference = _plain(hidden.detach(), weight.detach(), labels)
    torch.testing.assert_close(loss_sum, reference, atol=0.5, rtol=1e-2)

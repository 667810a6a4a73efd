"""Our AdamW against torch.optim.AdamW: same updates, interchangeable state dicts."""

from __future__ import annotations

import copy

import torch

from tempering.training import adamw
from tempering.training.adamw import AdamW, _foreach_adamw

HYPER = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8}


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _groups(model):
    weights = [p for p in model.parameters() if p.ndim == 2]
    biases = [p for p in model.parameters() if p.ndim == 1]
    return [{"params": weights, "weight_decay": 0.1, "name": "w"}, {"params": biases, "weight_decay": 0.0}]


def _train(model, optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 6, generator=generator)
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_matches_torch_fused_adamw_bit_for_bit():
    ours, theirs = _model(), _model()
    _train(ours, AdamW(_groups(ours), **HYPER), steps=5)
    _train(theirs, torch.optim.AdamW(_groups(theirs), fused=True, **HYPER), steps=5)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_state_dicts_load_across_implementations():
    ours, theirs = _model(), _model()
    ours_opt = AdamW(_groups(ours), **HYPER)
    _train(ours, ours_opt, steps=3)
    theirs.load_state_dict(ours.state_dict())
    theirs_opt = torch.optim.AdamW(_groups(theirs), fused=True, **HYPER)
    # deepcopy: torch.optim keeps the loaded "step" tensors without copying them
    theirs_opt.load_state_dict(copy.deepcopy(ours_opt.state_dict()))
    back = AdamW(_groups(_model(7)), **HYPER)
    back.load_state_dict(theirs_opt.state_dict())
    assert back.param_groups[0]["name"] == "w" and back.param_groups[1]["weight_decay"] == 0.0
    _train(ours, ours_opt, steps=2, seed=5)
    _train(theirs, theirs_opt, steps=2, seed=5)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(state["step"].item() == 3 for state in back.state.values())  # loaded copies, not aliases


def test_parameters_without_gradients_are_untouched_and_get_no_state():
    model = _model()
    optimizer = AdamW(_groups(model), **HYPER)
    model[2].weight.requires_grad_(False)
    before = model[2].weight.detach().clone()
    _train(model, optimizer, steps=2)
    assert torch.equal(model[2].weight, before)
    assert model[2].weight not in optimizer.state
    assert len(optimizer.state_dict()["state"]) == 3


def test_mismatched_groups_raise_value_error():
    optimizer = AdamW(_groups(_model()), **HYPER)
    other = AdamW([{"params": list(_model().parameters())}], **HYPER)
    try:
        other.load_state_dict(optimizer.state_dict())
    except ValueError as exc:
        assert "2 parameter groups" in str(exc)
    else:
        raise AssertionError("loading two groups into one must fail")


def test_foreach_fallback_matches_torch_foreach_adamw():
    torch.manual_seed(0)
    params = [torch.randn(5, 4), torch.randn(3)]
    grads = [torch.randn_like(p) for p in params]
    reference = [p.clone().requires_grad_() for p in params]
    torch_opt = torch.optim.AdamW(reference, foreach=True, weight_decay=0.1, **HYPER)
    exp_avgs, exp_avg_sqs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    steps = [torch.zeros(()) for _ in params]
    for _ in range(3):
        for ref, grad in zip(reference, grads, strict=True):
            ref.grad = grad.clone()
        torch_opt.step()
        torch._foreach_add_(steps, 1)
        _foreach_adamw(params, grads, exp_avgs, exp_avg_sqs, steps, {**HYPER, "weight_decay": 0.1})
    for ours, ref in zip(params, reference, strict=True):
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-6, atol=1e-7)


def test_without_a_fused_kernel_the_foreach_update_takes_over(monkeypatch):
    def missing(*args, **kwargs):
        raise NotImplementedError("no _fused_adamw_ for this backend")

    monkeypatch.setattr(torch, "_fused_adamw_", missing)
    monkeypatch.setattr(adamw, "_NO_FUSED_KERNEL", set())
    ours, theirs = _model(), _model()
    _train(ours, AdamW(_groups(ours), **HYPER), steps=3)
    _train(theirs, torch.optim.AdamW(_groups(theirs), foreach=True, **HYPER), steps=3)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert "cpu" in adamw._NO_FUSED_KERNEL  # remembered: later steps go straight to the fallback

"""AdamW that runs PyTorch's fused kernel without going through `torch.optim.Optimizer`.

Why not `torch.optim.AdamW`: its constructor, `step()`, `zero_grad()` and state-dict
methods pass through `torch._disable_dynamo`, which imports `torch._dynamo` on first use
(~0.9 s on a 2-core CPU, a third of `temper pretrain`'s time to first step) even when
nothing is compiled; and on CPU it defaults to the per-tensor loop, 3x slower than the
fused kernel. This class calls the same kernel as `torch.optim.AdamW(fused=True)`
(`torch._fused_adamw_`, one call per device and dtype), with a `_foreach` fallback for
devices without it, and reads and writes `torch.optim`'s state-dict format, so
checkpoints move freely between the two.
"""

from __future__ import annotations

from collections import defaultdict

import torch

_NO_FUSED_KERNEL: set[str] = set()  # device types where torch._fused_adamw_ turned out to be missing
_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
# torch.optim.AdamW writes these group keys; we keep them so its loader accepts our checkpoints.
_TORCH_GROUP_KEYS = {"amsgrad": False, "foreach": None, "maximize": False, "capturable": False,
                     "differentiable": False, "fused": True, "decoupled_weight_decay": True}


class AdamW:
    """Decoupled-weight-decay Adam over param groups (dicts with "params" and optional hyperparameters)."""

    def __init__(self, param_groups: list[dict], **defaults) -> None:
        self.defaults = {**_DEFAULTS, **_TORCH_GROUP_KEYS, **defaults}
        self.param_groups: list[dict] = []
        for group in param_groups:
            params = list(group["params"])
            if not params:
                raise ValueError("an optimizer parameter group has no parameters")
            self.param_groups.append({**self.defaults, **group, "params": params})
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = defaultdict(dict)

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient; parameters without one are left alone."""
        for group in self.param_groups:
            batches: dict[tuple, list[list[torch.Tensor]]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                lists = batches.setdefault((param.device, param.dtype), [[], [], [], [], []])
                for target, value in zip(lists, (param, param.grad, state["exp_avg"], state["exp_avg_sq"],
                                                 state["step"]), strict=True):
                    target.append(value)
            for (device, _), (params, grads, exp_avgs, exp_avg_sqs, steps) in batches.items():
                torch._foreach_add_(steps, 1)
                if device.type not in _NO_FUSED_KERNEL:
                    beta1, beta2 = group["betas"]
                    try:
                        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                                            lr=group["lr"], beta1=beta1, beta2=beta2,
                                            weight_decay=group["weight_decay"], eps=group["eps"],
                                            maximize=False, grad_scale=None, found_inf=None)
                        continue
                    except (AttributeError, NotImplementedError):  # an older torch, or a device without it
                        _NO_FUSED_KERNEL.add(device.type)
                _foreach_adamw(params, grads, exp_avgs, exp_avg_sqs, steps, group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) the gradients of every parameter this optimizer updates."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.detach_().zero_()

    def state_dict(self) -> dict:
        """Moments and groups in `torch.optim.Optimizer.state_dict()` layout (params as indices)."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for param in group["params"]:
                index.setdefault(param, len(index))
                ids.append(index[param])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[p]: dict(s) for p, s in self.state.items() if p in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore from `state_dict()` (ours or torch.optim.AdamW's); ValueError when the groups differ."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the saved state has {len(saved_groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        for number, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {number} has {len(saved['params'])} parameters in the saved "
                                 f"state and {len(group['params'])} here")
        saved_state = state_dict["state"]
        self.state = defaultdict(dict)
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for saved_id, param in zip(saved["params"], group["params"], strict=True):
                moments = saved_state.get(saved_id)
                if moments:
                    self.state[param] = {
                        "step": moments["step"].detach().to(device=param.device, dtype=torch.float32).clone(),
                        "exp_avg": moments["exp_avg"].detach().to(param).clone(),
                        "exp_avg_sq": moments["exp_avg_sq"].detach().to(param).clone()}
            group.update({k: v for k, v in saved.items() if k != "params"})
            group["betas"] = tuple(group["betas"])


def _foreach_adamw(params, grads, exp_avgs, exp_avg_sqs, steps, group) -> None:
    """The same update as the fused kernel, in `_foreach` ops, for devices without it."""
    beta1, beta2 = group["betas"]
    torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    for param, exp_avg, exp_avg_sq, step in zip(params, exp_avgs, exp_avg_sqs, steps, strict=True):
        count = int(step.item())
        step_size = group["lr"] / (1 - beta1 ** count)
        denom = (exp_avg_sq.sqrt() / (1 - beta2 ** count) ** 0.5).add_(group["eps"])
        param.addcdiv_(exp_avg, denom, value=-step_size)

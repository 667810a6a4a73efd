"""LoRA adapters for any stage that starts from a checkpoint: inject, save, load, merge, disable.

Uses `peft` (`inject_adapter_in_model`): our models are plain `nn.Module`s whose projections
are `nn.Linear` leaves named like Hugging Face's, so peft wraps them in place, names and all,
and no wrapper class sits between the loop and the model. What peft does not give an
injected model, this module adds in a few lines each: the adapter files a
`peft.PeftModel.from_pretrained` accepts on the exported base (keys under `base_model.model.`,
`adapter_config.json`), the merged fp32 weights under the plain parameter names, and a
reference view with the adapters switched off (DPO's reference is the base itself: no copy).

Targets are name patterns: a plain name (`q_proj`) matches that module in every block, a
pattern with a dot or wildcard is an fnmatch pattern on the full module name. Only
`nn.Linear` modules are adapted, and never the output head: the loss reads its weight
directly (chunked cross-entropy), so an adapter there would be silently skipped.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import torch
from torch import nn

from tempering.config.schema import LoraConfig
from tempering.errors import UserError

ADAPTER_MARKER = ".lora_"  # in the name of every adapter parameter (lora_A, lora_B)
PEFT_PREFIX = "base_model.model."  # how PeftModel names the wrapped model's tensors
ADAPTER_NAME = "default"
NEVER_ADAPTED = ("lm_head",)


def is_adapter_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (everything else is the frozen base)."""
    return ADAPTER_MARKER in name


class LoraAdapter:
    """The LoRA adapter injected into a model: its settings, the adapted modules, its files."""

    def __init__(self, settings: LoraConfig, target_names: list[str], base_checkpoint: str | None):
        self.settings = settings
        self.target_names = target_names
        self.base_checkpoint = base_checkpoint

    @property
    def alpha(self) -> float:
        """The LoRA alpha (default twice the rank)."""
        return self.settings.alpha if self.settings.alpha is not None else 2.0 * self.settings.r

    def peft_config(self):
        """The peft LoraConfig of this adapter."""
        from peft import LoraConfig as PeftLoraConfig

        return PeftLoraConfig(r=self.settings.r, lora_alpha=self.alpha, lora_dropout=self.settings.dropout,
                              target_modules=list(self.target_names), bias="none", task_type="CAUSAL_LM",
                              base_model_name_or_path=self.base_checkpoint)

    def adapter_files(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
        """(adapter_model.safetensors tensors, adapter_config.json) as peft saves them."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
        tensors = {PEFT_PREFIX + name: tensor.detach().contiguous() for name, tensor in state.items()}
        config = self.peft_config().to_dict()
        return tensors, {key: sorted(value) if isinstance(value, set) else
                         (value.value if hasattr(value, "value") else value) for key, value in config.items()}

    def load_adapter(self, model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
        """Load adapter tensors saved by `adapter_files` into the injected model."""
        from peft import set_peft_model_state_dict

        state = {name.removeprefix(PEFT_PREFIX): tensor for name, tensor in tensors.items()}
        result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
        missing = [name for name in result.missing_keys if is_adapter_parameter(name)]
        if missing or result.unexpected_keys:
            first = (missing or result.unexpected_keys)[0]
            raise UserError(f"{where} does not fit this run's LoRA adapter ({first} "
                            f"{'missing' if missing else 'unexpected'}); lora.* must equal the run's")


def apply_lora(model: nn.Module, settings: LoraConfig, base_checkpoint: str | None) -> LoraAdapter:
    """Inject LoRA adapters (peft) into the targeted linear layers of `model`, in place; return the adapter."""
    try:
        from peft import inject_adapter_in_model
    except ImportError:
        raise UserError("LoRA (lora.r) needs the peft package: pip install 'tempering[lora]'") from None
    targets = _target_names(model, settings.target_modules, explicit="target_modules" in settings.model_fields_set)
    adapter = LoraAdapter(settings, targets, base_checkpoint)
    inject_adapter_in_model(adapter.peft_config(), model, adapter_name=ADAPTER_NAME)
    return adapter


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's exported tensors with every adapter merged in fp32: W + (alpha / r) * B @ A, plain names."""
    from peft.tuners.lora import LoraLayer

    state = model.export_state_dict()
    merged = {name.replace(".base_layer.", "."): tensor for name, tensor in state.items()
              if not is_adapter_parameter(name)}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
            weight = module.get_base_layer().weight.detach().float()
            a = module.lora_A[ADAPTER_NAME].weight.detach().float()
            b = module.lora_B[ADAPTER_NAME].weight.detach().float()
            delta = (b @ a) * module.scaling[ADAPTER_NAME]
            merged[f"{name}.weight"] = (weight + delta).to(state[f"{name}.base_layer.weight"].dtype)
    return merged


def set_adapters_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every LoRA layer of `model` on or off (off: the model computes as its base)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


class AdapterDisabledReference:
    """The policy with its adapters switched off, as DPO's frozen reference: the same weights, no copy.

    Offers what the DPO objective reads from a reference (`hidden_states`, `lm_head`,
    `training`, `eval`, `train`) without being a module, so freezing or switching the
    reference's mode never touches the policy.
    """

    training = False

    def __init__(self, policy: nn.Module):
        self.policy = policy

    @property
    def lm_head(self) -> nn.Module:
        """The (never adapted) output head."""
        return self.policy.lm_head

    def hidden_states(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """The base model's hidden states, in eval mode and without gradients."""
        was_training = self.policy.training
        self.policy.eval()
        set_adapters_enabled(self.policy, False)
        try:
            with torch.no_grad():
                return self.policy.hidden_states(input_ids, **kwargs)
        finally:
            set_adapters_enabled(self.policy, True)
            self.policy.train(was_training)

    def eval(self) -> AdapterDisabledReference:
        """The reference is always in eval mode."""
        return self

    def train(self, mode: bool = True) -> AdapterDisabledReference:
        """Ignored: the reference never trains."""
        return self


def _target_names(model: nn.Module, patterns: list[str], *, explicit: bool) -> list[str]:
    """Full names of the linear modules the patterns select; UserError for a pattern that selects nothing."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    selected: list[str] = []
    for pattern in patterns:
        matched = [name for name in linears if _matches(name, pattern)]
        refused = [name for name in matched if name.split(".")[-1] in NEVER_ADAPTED]
        if refused:
            raise UserError(f"lora.target_modules pattern {pattern!r} selects {refused[0]}: the output head cannot "
                            "take an adapter (the loss reads its weight directly); train it with lr_groups instead")
        if not matched and explicit:
            raise UserError(f"lora.target_modules pattern {pattern!r} matches no linear layer "
                            f"(names look like {linears[0]}, {linears[-2] if len(linears) > 1 else linears[0]})")
        selected += [name for name in matched if name not in selected]
    if not selected:
        raise UserError("lora.target_modules selects no linear layer of this model; name its projections "
                        f"(names look like {linears[0]})")
    return [name for name in linears if name in selected]  # model order


def _matches(name: str, pattern: str) -> bool:
    """A plain name matches the last part of a module name; a dotted or wildcard pattern the whole name."""
    if any(char in pattern for char in ".*?["):
        return fnmatchcase(name, pattern)
    return name.split(".")[-1] == pattern

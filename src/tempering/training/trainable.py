"""What trains: frozen parameters, per-group learning rates, progressive unfreezing — for every stage and family.

Parameters are addressed by their names (for the llama family, Hugging Face Llama's:
`model.embed_tokens.weight`, `model.layers.{i}.*`, `model.norm.weight`, `lm_head.weight`).
Which names are the embeddings, the blocks, the final norm and the head is the model
family's `ParameterLayout`; nothing here names a family's tensors. A pattern is an
fnmatch pattern on names; a pattern that names a module (`model.embed_tokens`,
`model.layers.3`) also covers everything inside it. A tensor shared by two names (tied
embeddings) is one parameter, reported under its first name and matched by either name.

Permanently frozen parameters are left out of the optimizer; parameters waiting for
progressive unfreezing stay in it with requires_grad False, so AdamW, which skips
parameters whose grad is None, keeps no state for them until they train.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from tempering.config.schema import TrainingConfig
from tempering.errors import UserError
from tempering.models.family import ParameterLayout
from tempering.training.lora import is_adapter_parameter

TRAINABLE_COLUMNS = ["group", "tensors", "parameters", "lr", "weight decay"]


def frozen_by_config(model: nn.Module, training: TrainingConfig, layout: ParameterLayout) -> set[str]:
    """Return the parameter names that `freeze`, `freeze_first_blocks` and `train_only_head` freeze for good.

    With tied embeddings the output head IS the embedding matrix: `train_only_head`
    then trains the embedding too, and freezing the embeddings (by pattern or
    `freeze_first_blocks`) freezes the head as well.
    """
    aliases = _aliases(model)
    num_blocks = _num_blocks(aliases, layout)
    frozen: set[str] = set()
    for pattern in training.freeze:
        matched = {name for name, names in aliases.items() if _matches_any(pattern, names)}
        if not matched:
            raise UserError(f"training.freeze pattern {pattern!r} matches no parameter "
                            f"(names look like {_examples(aliases, layout)})")
        frozen |= matched
    if training.freeze_first_blocks:
        if training.freeze_first_blocks > num_blocks:
            raise UserError(f"training.freeze_first_blocks is {training.freeze_first_blocks}, but the "
                            f"model has only {num_blocks} blocks")
        frozen |= {name for name in aliases if layout.is_embedding(name)
                   or layout.block_index(name) in range(training.freeze_first_blocks)}
    if training.train_only_head:
        trained = {*layout.head, *layout.final_norm}
        frozen |= {name for name, names in aliases.items() if not trained & set(names)}
    frozen |= _frozen_by_train_only(aliases, training.train_only, layout)
    frozen |= _frozen_by_active_expert(aliases, training, layout)
    if any(is_adapter_parameter(name) for name in aliases):  # LoRA: the base stays as it is
        frozen |= {name for name in aliases if not is_adapter_parameter(name)}
    if frozen == set(aliases):
        raise UserError("training.freeze, freeze_first_blocks and train_only_head together freeze every "
                        "parameter; leave something to train")
    return frozen


def build_param_groups(model: nn.Module, training: TrainingConfig, layout: ParameterLayout) -> list[dict]:
    """Return AdamW param groups (params, weight_decay, lr_scale, lr, name) for every parameter not frozen for good.

    A parameter's lr_scale comes from the first `lr_groups` pattern it matches (that
    LR / learning_rate); otherwise from `layer_lr_decay` (block i: decay^(n_layers - i),
    embeddings decay^(n_layers + 1), final norm and head 1.0); otherwise 1.0. A tied
    embedding/head counts as the embedding. Parameters sharing (weight_decay, lr_scale)
    share a group; `set_learning_rate` sets each group's lr to the schedule's times lr_scale.
    """
    aliases = _aliases(model)
    lr_patterns = _lr_group_scales(training, aliases, layout)
    frozen = frozen_by_config(model, training, layout)
    num_blocks = _num_blocks(aliases, layout)
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if name in frozen:
            continue
        decays = training.decay_norms_and_embeddings or (param.ndim >= 2 and not layout.is_embedding(name))
        weight_decay = training.weight_decay if decays else 0.0
        lr_scale = next((scale for pattern, scale in lr_patterns if _matches_any(pattern, aliases[name])),
                        None)
        if lr_scale is None:
            lr_scale = _layer_decay_scale(name, training.layer_lr_decay, num_blocks, layout)
        group = groups.setdefault((weight_decay, lr_scale), {
            "params": [], "weight_decay": weight_decay, "lr_scale": lr_scale,
            "lr": training.learning_rate * lr_scale, "members": []})
        group["params"].append(param)
        group["members"].append(name)
    for group in groups.values():
        members = group.pop("members")
        group["name"] = f"{_describe_members(members, layout)} ({'decay' if group['weight_decay'] else 'no decay'})"
    return list(groups.values())


def trainable_at(model: nn.Module, frozen: set[str], training: TrainingConfig, step: int,
                 layout: ParameterLayout) -> list[str]:
    """The parameter names that train at optimizer step `step` (a pure function of the step).

    Progressive unfreezing (`unfreeze_top_blocks` K, `unfreeze_every_steps` S) trains the
    top min(n_blocks, K + step // S) blocks plus final norm and head; the embeddings
    join once every block trains. A tied embedding is the head, so it trains from the start.
    """
    aliases = _aliases(model)
    num_blocks = _num_blocks(aliases, layout)
    first_open = num_blocks - _num_open_blocks(training, num_blocks, step)
    return [name for name, names in aliases.items()
            if name not in frozen and any(_opens(alias, first_open, layout) for alias in names)]


def apply_requires_grad(model: nn.Module, frozen: set[str], training: TrainingConfig, step: int,
                        layout: ParameterLayout) -> list[str]:
    """Set requires_grad for optimizer step `step` (see `trainable_at`) and return the names trainable now."""
    trainable = trainable_at(model, frozen, training, step, layout)
    wanted = set(trainable)
    for name in _aliases(model):
        model.get_parameter(name).requires_grad_(name in wanted)
    return trainable


def describe_parameters(names: list[str], layout: ParameterLayout) -> str:
    """Name a set of parameters by their parts: 'embed_tokens, layers.0-3, norm'."""
    return _describe_members(names, layout)


def describe_trainable(model: nn.Module, groups: list[dict], learning_rate: float, frozen: set[str]) -> list[list]:
    """Return table rows (TRAINABLE_COLUMNS) per optimizer group, plus one row for the frozen parameters."""
    rows = [[group["name"], len(group["params"]), f"{sum(p.numel() for p in group['params']):,}",
             f"{learning_rate * group['lr_scale']:.3g}", f"{group['weight_decay']:g}"] for group in groups]
    frozen_params = [model.get_parameter(name) for name in sorted(frozen)]
    rows.append(["frozen", len(frozen_params), f"{sum(p.numel() for p in frozen_params):,}", "-", "-"])
    return rows


def _frozen_by_train_only(aliases: dict[str, list[str]], patterns: list[str], layout: ParameterLayout) -> set[str]:
    """Everything that no `train_only` pattern matches ('router' stands for the layout's routers)."""
    if not patterns:
        return set()
    kept: set[str] = set()
    for pattern in patterns:
        resolved = pattern
        if pattern == "router":
            if layout.router is None:
                raise UserError("training.train_only 'router' needs a mixture-of-experts model (moe family)")
            resolved = layout.router
        matched = {name for name, names in aliases.items() if _matches_any(resolved, names)}
        if not matched:
            raise UserError(f"training.train_only pattern {pattern!r} matches no parameter "
                            f"(names look like {_examples(aliases, layout)})")
        kept |= matched
    return set(aliases) - kept


def _frozen_by_active_expert(aliases: dict[str, list[str]], training: TrainingConfig,
                             layout: ParameterLayout) -> set[str]:
    """With active_expert I: every other expert and the routers; with freeze_shared also everything shared."""
    active = training.active_expert
    if active is None:
        if training.freeze_shared:
            raise UserError("training.freeze_shared applies to a sequential expert run: give training.active_expert "
                            "(--active-expert I) too")
        return set()
    experts = {layout.expert_index(name) for name in aliases} - {None}
    if not experts:
        raise UserError("training.active_expert needs a mixture-of-experts model (a moe preset such as expert_75m)")
    if active not in experts:
        raise UserError(f"training.active_expert is {active}, but the model's experts are 0-{max(experts)}")
    routers = {name for name, names in aliases.items() if layout.router and _matches_any(layout.router, names)}
    frozen = {name for name in aliases if layout.expert_index(name) not in (None, active)} | routers
    if training.freeze_shared:
        frozen |= {name for name in aliases if layout.expert_index(name) is None}
    return frozen


def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """Map each parameter's first name to all its names (tied weights have two), in model order."""
    first_name: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        canonical = first_name.setdefault(id(param), name)
        aliases.setdefault(canonical, []).append(name)
    return aliases


def _matches_any(pattern: str, names: list[str]) -> bool:
    """Tell whether a pattern matches one of a parameter's names, or a module containing it."""
    return any(fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*") for name in names)


def _lr_group_scales(training: TrainingConfig, aliases: dict[str, list[str]],
                     layout: ParameterLayout) -> list[tuple[str, float]]:
    """Turn lr_groups (pattern → LR) into (pattern, LR / learning_rate), checking each pattern matches."""
    if training.lr_groups and training.learning_rate <= 0:
        raise UserError("training.lr_groups needs training.learning_rate above 0 (group LRs are scaled with it)")
    scales = []
    for pattern, lr in training.lr_groups.items():
        if not any(_matches_any(pattern, names) for names in aliases.values()):
            raise UserError(f"training.lr_groups pattern {pattern!r} matches no parameter "
                            f"(names look like {_examples(aliases, layout)})")
        scales.append((pattern, lr / training.learning_rate))
    return scales


def _layer_decay_scale(name: str, decay: float | None, num_blocks: int, layout: ParameterLayout) -> float:
    """LR scale of one parameter under layer-wise LR decay (1.0 without it)."""
    if decay is None:
        return 1.0
    if layout.is_embedding(name):
        return decay ** (num_blocks + 1)
    index = layout.block_index(name)
    return 1.0 if index is None else decay ** (num_blocks - index)


def _num_open_blocks(training: TrainingConfig, num_blocks: int, step: int) -> int:
    """How many top blocks train at `step` under progressive unfreezing."""
    top, every = training.unfreeze_top_blocks, training.unfreeze_every_steps
    if top is None:
        if every is not None:
            raise UserError("training.unfreeze_every_steps needs training.unfreeze_top_blocks "
                            "(how many top blocks train from the start)")
        return num_blocks
    return min(num_blocks, top + (step // every if every else 0))


def _opens(name: str, first_open_block: int, layout: ParameterLayout) -> bool:
    """Tell whether a parameter name trains when blocks from `first_open_block` up train."""
    if layout.is_embedding(name):
        return first_open_block == 0
    index = layout.block_index(name)
    return index is None or index >= first_open_block


def _num_blocks(aliases: dict[str, list[str]], layout: ParameterLayout) -> int:
    """Number of blocks: one more than the highest block index among the parameter names."""
    indices = [layout.block_index(name) for name in aliases]
    return max((index for index in indices if index is not None), default=-1) + 1


def _describe_members(names: list[str], layout: ParameterLayout) -> str:
    """Name a group by its parts, in model order: 'embed_tokens, layers.0-3, norm'."""
    parts: list[str] = []
    blocks: list[int] = []
    for name in names:
        index = layout.block_index(name)
        if index is not None:
            blocks.append(index)
            part = "layers"
        else:
            part = name.removeprefix("model.").removesuffix(".weight")
        if part not in parts:
            parts.append(part)
    return ", ".join(_block_span(sorted(set(blocks))) if part == "layers" else part for part in parts)


def _block_span(blocks: list[int]) -> str:
    """'layers.3', 'layers.0-3' (contiguous) or 'layers.0,2,5'."""
    if len(blocks) == 1:
        return f"layers.{blocks[0]}"
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"layers.{blocks[0]}-{blocks[-1]}"
    return "layers." + ",".join(map(str, blocks))


def _examples(aliases: dict[str, list[str]], layout: ParameterLayout) -> str:
    """A few real parameter names, for error messages."""
    names = list(aliases)
    picks = [names[0], *(n for n in names if layout.block_index(n) == 0)][:2] + names[-1:]
    return ", ".join(dict.fromkeys(picks))

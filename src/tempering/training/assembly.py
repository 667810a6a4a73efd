"""One assembly for every stage: the model (from a preset or a checkpoint), what trains, the optimizer, the objective.

Pretraining, post-training, SFT and DPO (and every later stage) differ only in what they
hand `assemble`: where the model comes from (`source_from_preset` /
`source_from_checkpoint`), the objective, and the vocabulary the run's tokenizer needs.
Everything else — initialisation under the run's seed, loading weights, growing the
vocabulary, device placement, freezing (`training.freeze`, `freeze_first_blocks`,
`train_only_head`), per-group and layer-wise learning rates, progressive unfreezing, the
AdamW groups and the printed table of trainable parameters — happens here once, so each
key works in every stage. Nothing here writes to disk: a stage assembles (and so
validates its trainable rules) before it creates its run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tempering.checkpoint.io import Checkpoint
from tempering.checkpoint.model_loading import build_from_checkpoint
from tempering.config.schema import Config, ModelConfig, TrainingConfig
from tempering.errors import UserError
from tempering.models.family import ModelFamily, SpecialTokenIds
from tempering.models.registry import find_preset
from tempering.tokenizer import TokenizerBundle
from tempering.tracking.console import console, print_table
from tempering.training.adamw import AdamW
from tempering.training.device import check_precision, resolve_precision
from tempering.training.lora import LoraAdapter, apply_lora, merged_state_dict
from tempering.training.objective import Objective
from tempering.training.optim import build_optimizer
from tempering.training.parallel import Parallel, full_state, sharded_weights, start_parallel
from tempering.training.run_dir import frozen_choice
from tempering.training.trainable import (
    TRAINABLE_COLUMNS,
    apply_requires_grad,
    build_param_groups,
    describe_parameters,
    describe_trainable,
    frozen_by_config,
    trainable_at,
)

# model.* keys that are not dimensions of the architecture.
NON_ARCHITECTURE_KEYS = frozenset({"preset", "dropout"})
# Architecture keys a run from a checkpoint may change: they weight losses, not shape the model.
LOSS_WEIGHT_KEYS = frozenset({"router_aux_loss_coef", "router_z_loss_coef"})


@dataclass
class ModelSource:
    """Where a run's model comes from: a family's preset (fresh weights) or a checkpoint."""

    family: ModelFamily
    arch: Any
    preset: str | None = None
    checkpoint: Checkpoint | None = None
    initial_weights: dict[str, torch.Tensor] | None = None  # tensors loaded over the fresh init (expert runs)


def source_from_preset(model: ModelConfig, tokenizer_vocab_size: int) -> ModelSource:
    """The preset with model.* overrides applied; the vocabulary follows the tokenizer unless set."""
    family, _ = find_preset(model.preset)
    overrides = {key: value for key, value in model.model_dump(exclude=NON_ARCHITECTURE_KEYS).items()
                 if value is not None}
    vocab = overrides.get("vocab_size")
    if vocab is None:
        overrides["vocab_size"] = tokenizer_vocab_size
    elif vocab < tokenizer_vocab_size:
        raise UserError(f"model.vocab_size ({vocab}) is smaller than the tokenizer's vocabulary "
                        f"({tokenizer_vocab_size}); raise it or drop the override")
    return ModelSource(family, family.architecture(model.preset, overrides), preset=model.preset)


def source_from_checkpoint(checkpoint: Checkpoint, model: ModelConfig) -> ModelSource:
    """The checkpoint's family and architecture (read from it); explicit model.* keys must agree with it."""
    family, arch = checkpoint.family, checkpoint.architecture()
    reweighted = {key: getattr(model, key) for key in LOSS_WEIGHT_KEYS & model.model_fields_set if hasattr(arch, key)}
    if reweighted:
        arch = arch.with_overrides(**reweighted)
        arch.check()
    explicit = model.model_fields_set - NON_ARCHITECTURE_KEYS
    differing = [f"model.{key} ({getattr(model, key)} ≠ {getattr(arch, key, None)})" for key in sorted(explicit)
                 if getattr(model, key) != getattr(arch, key, None)]
    recorded_preset = checkpoint.meta.get("preset")
    if "preset" in model.model_fields_set and recorded_preset not in (None, model.preset):
        differing.append(f"model.preset ({model.preset} ≠ {recorded_preset})")
    if differing:
        raise UserError(f"the config disagrees with the architecture of {checkpoint.path}: {', '.join(differing)}; "
                        "drop these keys (a run from a checkpoint keeps its architecture)")
    return ModelSource(family, arch, preset=recorded_preset, checkpoint=checkpoint)


@dataclass
class Assembly:
    """What a stage hands the loop: the built model and everything that decides how it trains."""

    family: ModelFamily
    arch: Any
    model: nn.Module
    optimizer: AdamW
    objective: Objective
    frozen: set[str]
    source: ModelSource
    update_trainable: Callable[[int], str | None] | None = None  # progressive unfreezing, see `assemble`
    adapter: LoraAdapter | None = None  # LoRA (lora.r): only the adapters train
    parallel: Parallel = field(default_factory=Parallel)  # this process's rank among the launcher's processes
    module: nn.Module | None = None  # what computes a loss under DDP / FSDP (model + objective, wrapped)

    def checkpoint_weights(self, kind: str) -> dict:
        """What a checkpoint of `kind` (periodic, best, final) holds of the model: `save_checkpoint` arguments.

        Without LoRA, the weights. With LoRA, a periodic checkpoint holds the adapter only (the
        base is the source checkpoint); best/ and final/ hold the weights merged in fp32, which
        load as a plain model, and the adapter in adapter/.
        """
        if self.adapter is None:
            return {"weights": full_state(self.model.export_state_dict())}  # FSDP shards gathered whole
        adapter = self.adapter.adapter_files(self.model)
        if kind == "periodic":
            return {"weights": None, "adapter": adapter}
        return {"weights": merged_state_dict(self.model), "adapter": adapter, "adapter_in_subdir": True}

    def load_checkpoint_weights(self, checkpoint: Checkpoint, device: torch.device) -> None:
        """Load what `checkpoint_weights` saved (resume and NaN rollback): the weights, or the adapter."""
        if self.adapter is None:
            self.model.load_exported_state_dict(sharded_weights(self.model, checkpoint.load_weights(device=str(device))))
        else:
            self.adapter.load_adapter(self.model, checkpoint.load_adapter(device=str(device)), checkpoint.path)

    def checkpoint_configs(self, tokenizer: TokenizerBundle, config: Config,
                           extra_eos_ids: tuple[int, ...] = ()) -> tuple[dict, dict | None]:
        """(config.json, generation_config.json) content for this run's checkpoints.

        Generation stops at the tokenizer's EOS, at `extra_eos_ids` (a chat template's end of
        turn) and at the end tokens the source checkpoint already listed (an imported instruct model's).
        """
        inherited = _generation_eos_ids(self.source.checkpoint) if self.source.checkpoint else ()
        vocab_size = self.family.vocab_size(self.arch)
        eos_ids = tuple(i for i in dict.fromkeys((tokenizer.eos_id, *extra_eos_ids, *inherited))
                        if vocab_size is None or i < vocab_size)
        special = SpecialTokenIds(bos_id=tokenizer.bos_id, eos_ids=eos_ids, pad_id=tokenizer.pad_id)
        return (self.family.to_hf_config(self.arch, dropout=config.model.dropout, special=special),
                self.family.generation_config(special))

    def checkpoint_meta(self) -> dict:
        """What every checkpoint's meta.json says about the model."""
        meta = {"family": self.family.name, "model_type": self.family.model_type(self.arch),
                "preset": self.source.preset}
        if self.adapter is not None:  # what an adapter-only (periodic) checkpoint is applied to
            meta["lora_base"] = self.adapter.base_checkpoint
        return meta

    def print_trainable(self, training: TrainingConfig) -> None:
        """Print the table of trainable parameters per optimizer group, with their LR and weight decay."""
        groups = build_param_groups(self.model, training, self.family.layout)
        print_table("trainable parameters", TRAINABLE_COLUMNS,
                    describe_trainable(self.model, groups, training.learning_rate, self.frozen), to_stdout=False)

    def num_parameters(self) -> int:
        """Parameters of the built model (a tied tensor once)."""
        return sum(p.numel() for p in self.model.parameters())


def assemble(config: Config, source: ModelSource, objective: Objective | Callable[[nn.Module], Objective], *,
             device: torch.device, vocab_size: int | None = None) -> Assembly:
    """Build (or load) the model, grow it to `vocab_size` tokens if asked, apply the trainable rules, build AdamW.

    `objective` is an Objective, or a function of the built model that returns one (DPO's
    reference is a frozen copy of the initial policy).
    """
    training, family = config.training, source.family
    if training.precision == "auto":  # frozen into config.yaml: a resume on other hardware keeps the run's choice
        training.precision = frozen_choice(config, "training.precision") or resolve_precision(device, "auto")
    check_precision(device, training.precision)
    torch.manual_seed(config.run.seed)  # initial weights are a function of the seed
    if source.checkpoint is None:
        model, arch = family.build(source.arch, dropout=config.model.dropout), source.arch
        if source.initial_weights:
            model.load_exported_state_dict({**model.export_state_dict(), **source.initial_weights})
    else:
        _, arch, model = build_from_checkpoint(source.checkpoint, dropout=config.model.dropout)
        if source.arch != arch:
            model, arch = _carry_over(family, model, arch, source.arch, dropout=config.model.dropout)
    if vocab_size is not None and vocab_size > family.vocab_size(arch):
        console.print(f"resizing the embeddings from {family.vocab_size(arch)} to {vocab_size} tokens "
                      "(new rows start at the mean embedding)")
        model = family.resize_vocabulary(model, vocab_size, dropout=config.model.dropout)
        arch = model.arch
    adapter = _lora_adapter(model, config, source)
    model.to(device)
    model.gradient_checkpointing = training.gradient_checkpointing
    layout = family.layout
    frozen = frozen_by_config(model, training, layout)
    if training.active_expert is not None:  # checked above: a mixture of experts
        model.route_every_token_to(training.active_expert)
    unfreezing = training.unfreeze_top_blocks is not None
    if not isinstance(objective, Objective):
        objective = objective(model)  # before wrapping: DPO's reference is a plain copy of the policy
    parallel = start_parallel(training.strategy, training.fsdp.reshard_after_forward,
                              training.distributed_timeout_minutes)
    module = None
    if parallel.distributed:
        # DDP hooks the parameters that require grad when it is built: open every block that will ever
        # train (progressive unfreezing) while wrapping; frozen ones stay out for good.
        apply_requires_grad(model, frozen, training, 10**12, layout)
        module = parallel.wrap(model, objective, layout, mixed_precision=training.precision, device=device,
                               find_unused=unfreezing)
    apply_requires_grad(model, frozen, training, 0, layout)
    optimizer = build_optimizer(model, training, layout)  # after FSDP has turned the parameters into shards

    def update_trainable(step: int) -> str | None:
        """Set requires_grad for step `step`; describe what starts training at this step, if anything."""
        now = apply_requires_grad(model, frozen, training, step, layout)
        newly = set(now) - set(trainable_at(model, frozen, training, step - 1, layout)) if step else set()
        return describe_parameters([name for name in now if name in newly], layout) if newly else None

    return Assembly(family, arch, model, optimizer, objective, frozen, source,
                    update_trainable if unfreezing else None, adapter, parallel, module)


def _carry_over(family: ModelFamily, model: nn.Module, arch: Any, wanted: Any, *, dropout: float):
    """The checkpoint's model as `wanted`: reweighted losses keep it, another head or more labels go through the family."""
    reweighted = {key: getattr(wanted, key) for key in LOSS_WEIGHT_KEYS if hasattr(arch, key)}
    if reweighted and arch.with_overrides(**reweighted) == wanted:  # shapes are the checkpoint's
        model.arch = wanted
        return model, wanted
    return family.adapt(model, wanted, dropout=dropout), wanted


def _lora_adapter(model: nn.Module, config: Config, source: ModelSource) -> LoraAdapter | None:
    """Inject LoRA adapters when lora.r is set (only into a model that starts from a checkpoint)."""
    if config.lora.r is None:
        return None
    if source.checkpoint is None:
        raise UserError("lora.r is set, but LoRA adapts an existing model and this run starts from fresh weights; "
                        "continue a checkpoint with `temper post-train --checkpoint PATH --lora-r R`")
    adapter = apply_lora(model, config.lora, str(source.checkpoint.path.resolve()))
    console.print(f"LoRA: rank {config.lora.r}, alpha {adapter.alpha:g} on {len(adapter.target_names)} linear "
                  "layers; every other weight is frozen")
    return adapter


def _generation_eos_ids(checkpoint: Checkpoint) -> tuple[int, ...]:
    """The end tokens a checkpoint's generation_config.json lists."""
    eos = checkpoint.generation_config.get("eos_token_id")
    return tuple(i for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int))

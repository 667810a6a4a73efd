"""`temper dpo`: preference tuning against a frozen reference (or its precomputed log-probs)."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import torch
from torch import nn

from tempering.checkpoint.model_loading import load_model
from tempering.checkpoint.resolution import fill_config_placeholders, record_run, source_names
from tempering.config.schema import Config, DatasetConfig
from tempering.data.chat import load_preference_pairs, render_preference_pair
from tempering.errors import UserError
from tempering.tracking.console import console, warn
from tempering.training.chat_setup import (
    ChatStart,
    assemble_chat,
    chat_checkpoint_configs,
    chat_meta,
    load_chat_start,
    split_items,
    start_chat_run,
)
from tempering.training.device import autocast, pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, train
from tempering.training.lora import AdapterDisabledReference
from tempering.training.preference import (
    Dpo,
    PreferenceBatches,
    check_dpo_settings,
    precompute_reference_logps,
)


class PairEvalSet:
    """Validation pairs in order; pair indices are offset into the shared reference table."""

    def __init__(self, pairs: list, *, offset: int, pad_id: int, max_len: int):
        self.pairs, self.offset, self.pad_id, self.max_len = pairs, offset, pad_id, max_len

    def batches(self, batch_size: int) -> PreferenceBatches:
        """The pairs as in-order batches (pair_index local to this set)."""
        return PreferenceBatches(self.pairs, batch_size=batch_size, seed=0, pad_id=self.pad_id,
                                 max_len=self.max_len, shuffle=False)

    def eval_batches(self, batch_size: int):
        """Yield every validation batch once, with pair indices into the shared reference table."""
        batches = self.batches(batch_size)
        for index in range(batches.batches_per_epoch):
            batch = batches.batch(index)
            batch["pair_index"] = batch["pair_index"] + self.offset
            yield batch


def run_dpo(config: Config, *, cli_checkpoint: str | None = None, restart: bool = False) -> dict:
    """Preference-tune the resolved checkpoint; resume the run in save_dir if there is one."""
    dpo = config.dpo
    check_dpo_settings(dpo.beta, dpo.loss_type, dpo.label_smoothing)
    if not config.data.datasets:
        raise UserError("no preference data: give --data PATH (JSONL with prompt, chosen, rejected)")
    start = load_chat_start(config, cli_checkpoint)
    config = fill_config_placeholders(config, source_names(start.source.meta))
    train_pairs, val_pairs = _pairs(config, start)
    pad_id = start.tokenizer.pad_id if start.tokenizer.pad_id is not None else start.tokenizer.eos_id
    batches = PreferenceBatches(train_pairs, batch_size=config.training.batch_size, seed=config.run.seed,
                                pad_id=pad_id, max_len=config.data.seq_len)
    total_steps, length_reason = count_total_steps(
        config.training, batches.batches_per_epoch, samples_per_batch=config.training.batch_size,
        tokens_per_batch=None)
    device = pick_device(config.training.device)
    val_set = PairEvalSet(val_pairs, offset=len(train_pairs), pad_id=pad_id, max_len=config.data.seq_len)
    assembly = assemble_chat(config, start, partial(_dpo_objective, config, batches, val_set, device), device)
    run_dir, tokenizer_dir = start_chat_run(config, start, restart=restart)
    console.print(f"dpo: {len(train_pairs)} training pairs, {len(val_pairs)} validation; beta {dpo.beta}, "
                  f"loss {dpo.loss_type}; {total_steps} steps")
    hf_config, generation_config = chat_checkpoint_configs(assembly, start, config)
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, train_batches=batches,
        val_sets={"val": [val_set]} if val_pairs else {}, device=device, total_steps=total_steps,
        length_reason=length_reason, hf_config=hf_config, generation_config=generation_config,
        tokenizer_dir=tokenizer_dir,
        meta={**chat_meta(start, config, assembly), "beta": dpo.beta, "loss_type": dpo.loss_type,
              "reference": dpo.ref_checkpoint or ("base (LoRA adapters off)" if config.lora.r else "initial policy")})
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def _dpo_objective(config: Config, batches: PreferenceBatches, val_set: PairEvalSet, device: torch.device,
                   policy: nn.Module) -> Dpo:
    """DPO against a live frozen reference, or against its log-probs computed once (the reference then freed)."""
    dpo = config.dpo
    settings = {"beta": dpo.beta, "loss_type": dpo.loss_type, "label_smoothing": dpo.label_smoothing}
    reference = _reference_model(config, policy, device)
    if not dpo.precompute_ref:
        return Dpo(**settings, ref_model=reference)
    amp = partial(autocast, device, config.training.precision)
    chosen, rejected = precompute_reference_logps(reference, batches, device=device, autocast=amp)
    if val_set.pairs:
        val_chosen, val_rejected = precompute_reference_logps(reference, val_set.batches(config.training.batch_size),
                                                              device=device, autocast=amp)
        chosen, rejected = torch.cat([chosen, val_chosen]), torch.cat([rejected, val_rejected])
    del reference  # the point of precomputing: the reference no longer takes memory
    console.print(f"reference log-probs precomputed for {len(chosen)} pairs; reference model freed")
    return Dpo(**settings, ref_logps=(chosen, rejected))


def _pairs(config: Config, start: ChatStart) -> tuple[list, list]:
    train = _render_pairs(config.data.datasets, start, config)
    if config.data.val_data:
        return train, _render_pairs(config.data.val_data, start, config)
    return split_items(train, config.data.val_split, config.run.seed)


def _render_pairs(datasets: list[DatasetConfig], start: ChatStart, config: Config) -> list:
    pairs, dropped, identical = [], 0, 0
    for dataset in datasets:
        fmt = "auto" if dataset.format in ("auto", "jsonl") else dataset.format
        for pair in load_preference_pairs(dataset.path, fmt, dataset.transform, dataset.limit):
            rendered = render_preference_pair(pair, start.template, start.tokenizer, max_seq_length=config.data.seq_len)
            if rendered is None:
                dropped += 1
            elif np.array_equal(rendered[0].input_ids, rendered[1].input_ids):
                identical += 1  # chosen equals rejected: the loss has no gradient to give
            else:
                pairs.append(rendered)
    if identical:
        warn(f"{identical} preference pair(s) have the same chosen and rejected response (nothing to prefer); skipped")
    if dropped:
        console.print(f"rendering: {dropped} preference pairs dropped (no trained token left within --seq-len)")
    if not pairs:
        raise UserError("no preference pairs left after rendering; raise --seq-len")
    return pairs


def _reference_model(config: Config, policy: nn.Module, device: torch.device) -> nn.Module:
    """A frozen reference: an explicit checkpoint, the base under LoRA (no copy), or a copy of the initial policy."""
    if config.lora.r is not None and not config.dpo.ref_checkpoint:
        return AdapterDisabledReference(policy)
    if config.dpo.ref_checkpoint:
        loaded = load_model(config.dpo.ref_checkpoint, device=device)
        theirs, ours = loaded.family.vocab_size(loaded.arch), policy.arch.vocab_size
        if theirs != ours:
            raise UserError(f"dpo.ref_checkpoint {config.dpo.ref_checkpoint} has a vocabulary of {theirs}, "
                            f"the policy {ours}")
        reference = loaded.model
    else:
        reference = copy.deepcopy(policy)
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference

"""`temper pretrain`: assemble tokenizer, data, model and optimizer, then run the loop."""

from __future__ import annotations

from pathlib import Path

import torch

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.resolution import record_run
from tempering.config.presets import Architecture, get_preset
from tempering.config.schema import Config, ModelConfig
from tempering.data.datasets import build_lm_data, is_shard_dir
from tempering.errors import UserError
from tempering.models import build_model
from tempering.models.hf import to_hf_config
from tempering.tokenizer import load_tokenizer
from tempering.tracking.console import console
from tempering.training.device import pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, train
from tempering.training.objectives import OBJECTIVES, count_window_tokens
from tempering.training.optim import build_optimizer
from tempering.training.run_dir import prepare_run_dir


def run_pretrain(config: Config, *, restart: bool = False) -> dict:
    """Pretrain from scratch, or resume the run already in `run.save_dir`."""
    tokenizer = load_tokenizer(resolve_tokenizer_path(config))
    arch = build_architecture(config.model, tokenizer.vocab_size)
    if config.data.seq_len > arch.max_seq_len:
        raise UserError(f"data.seq_len ({config.data.seq_len}) is longer than the model's context "
                        f"({arch.max_seq_len}, preset {config.model.preset}); lower --seq-len or raise model.max_seq_len")
    data = build_lm_data(config, tokenizer, arch.vocab_size)
    batch_size = config.training.batch_size
    total_steps, length_reason = count_total_steps(
        config.training, data.train_batches.batches_per_epoch, samples_per_batch=batch_size,
        tokens_per_batch=batch_size * config.data.seq_len)
    _check_early_stopping(config, bool(data.val_sets))
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)

    device = pick_device(config.training.device)
    torch.manual_seed(config.run.seed)
    model = build_model(arch, dropout=config.model.dropout).to(device)
    model.gradient_checkpointing = config.training.gradient_checkpointing
    optimizer = build_optimizer(model, config.training)
    console.print(f"model: {config.model.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
                  f"parameters) on {device}; {total_steps} steps of "
                  f"{config.training.batch_size * config.training.accumulation_steps} × {config.data.seq_len} tokens")
    setup = TrainingSetup(
        config=config, run_dir=run_dir, model=model, optimizer=optimizer, objective=OBJECTIVES["clm"], static_shapes=True,
        count_units=count_window_tokens, train_batches=data.train_batches, val_sets=data.val_sets,
        device=device, total_steps=total_steps, length_reason=length_reason,
        hf_config=to_hf_config(arch, dropout=config.model.dropout, bos_id=tokenizer.bos_id,
                               eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id),
        tokenizer_dir=Path(tokenizer.path) if tokenizer.path else None,
        meta={"tokenizer_fingerprint": tokenizer.fingerprint, "source_checkpoint": None,
              "post_training": False, "preset": config.model.preset, "seq_len": config.data.seq_len})
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def resolve_tokenizer_path(config: Config) -> Path:
    """The configured tokenizer, else the one recorded in the first shard dir's manifest."""
    if config.tokenizer.path is not None:
        return Path(config.tokenizer.path)
    for dataset in config.data.datasets:
        if is_shard_dir(Path(dataset.path)):
            from tempering.data.shards import read_manifest

            recorded = read_manifest(Path(dataset.path)).get("tokenizer", {}).get("path")
            if recorded:
                return Path(recorded)
    raise UserError("no tokenizer: give --tokenizer DIR (or tokenizer.path in the config)")


def build_architecture(model: ModelConfig, tokenizer_vocab_size: int) -> Architecture:
    """The preset with config overrides; the vocabulary follows the tokenizer unless set."""
    overrides = model.model_dump(exclude={"preset", "dropout"})
    if overrides["vocab_size"] is None:
        overrides["vocab_size"] = tokenizer_vocab_size
    elif overrides["vocab_size"] < tokenizer_vocab_size:
        raise UserError(f"model.vocab_size ({overrides['vocab_size']}) is smaller than the tokenizer's "
                        f"vocabulary ({tokenizer_vocab_size}); raise it or drop the override")
    arch = get_preset(model.preset).with_overrides(**overrides)
    arch.check()
    return arch


def _check_early_stopping(config: Config, has_validation: bool) -> None:
    if config.training.early_stopping_patience and not has_validation:
        raise UserError("training.early_stopping_patience needs validation data: set --val-split above 0 "
                        "or give --val-data")

"""`temper pretrain`: assemble tokenizer, data, model and optimizer, then run the loop (causal or masked LM; NER in ner.py)."""

from __future__ import annotations

from pathlib import Path

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.resolution import fill_config_placeholders, record_run
from tempering.config.schema import Config
from tempering.data.datasets import build_lm_data, is_shard_dir
from tempering.errors import UserError
from tempering.models.registry import find_preset
from tempering.tokenizer import load_tokenizer
from tempering.tracking.console import console
from tempering.training.assembly import assemble, source_from_preset
from tempering.training.captioning_run import run_captioning, trains_captions
from tempering.training.causal_lm import CausalLM
from tempering.training.device import pick_device
from tempering.training.expert_runs import load_expert_dir, save_expert_run
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, train
from tempering.training.masked_lm import MaskedLM, prepare_masked_lm, save_run_tokenizer
from tempering.training.run_dir import prepare_run_dir
from tempering.training.speech_families import is_speech_family
from tempering.training.tasks import resolve_task


def run_pretrain(config: Config, *, restart: bool = False) -> dict:
    """Pretrain from scratch, or resume the run already in `run.save_dir`."""
    config = fill_config_placeholders(config, {"backbone": config.model.preset})
    family, preset_arch = find_preset(config.model.preset)
    if is_speech_family(family):
        from tempering.training.speech import run_speech_pretrain

        return run_speech_pretrain(config, restart=restart)
    if trains_captions(family):  # a vision preset: image captioning
        return run_captioning(config, restart=restart)
    task = resolve_task(config, family, preset_arch)
    if task == "token_classification":
        from tempering.training.ner import run_ner

        return run_ner(config, restart=restart)
    tokenizer = load_tokenizer(resolve_tokenizer_path(config))
    source = source_from_preset(config.model, tokenizer.vocab_size)
    context = source.family.context_length(source.arch)
    if context is not None and config.data.seq_len > context:
        raise UserError(f"data.seq_len ({config.data.seq_len}) is longer than the model's context "
                        f"({context}, preset {config.model.preset}); lower --seq-len or raise model.max_seq_len")
    expert_dir = _expert_checkpoint_dir(config)
    if expert_dir is not None:
        source.initial_weights = load_expert_dir(expert_dir, source.family, source.arch, tokenizer.fingerprint)
    data = build_lm_data(config, tokenizer, source.family.vocab_size(source.arch))
    batch_size = config.training.batch_size
    total_steps, length_reason = count_total_steps(
        config.training, data.train_batches.batches_per_epoch, samples_per_batch=batch_size,
        tokens_per_batch=batch_size * config.data.seq_len)
    _check_early_stopping(config, bool(data.val_sets))
    objective, train_batches, val_sets, run_tokenizer = CausalLM(), data.train_batches, data.val_sets, None
    if task == "masked_lm":
        run_tokenizer, _, train_batches, val_sets = prepare_masked_lm(config, tokenizer, train_batches, val_sets)
        tokenizer, objective = run_tokenizer, MaskedLM()
        source = source_from_preset(config.model, tokenizer.vocab_size)
    device = pick_device(config.training.device)
    assembly = assemble(config, source, objective, device=device)
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)
    if run_tokenizer is not None:  # the checkpoints carry the tokenizer with its mask token
        tokenizer.path = save_run_tokenizer(run_tokenizer, run_dir)

    console.print(f"model: {config.model.preset} ({assembly.num_parameters() / 1e6:.2f}M parameters, "
                  f"{source.family.name} family) on {device}; {total_steps} steps of "
                  f"{config.training.batch_size * config.training.accumulation_steps} × {config.data.seq_len} tokens")
    hf_config, generation_config = assembly.checkpoint_configs(tokenizer, config)
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, static_shapes=task == "causal_lm",
        train_batches=train_batches, val_sets=val_sets,
        device=device, total_steps=total_steps, length_reason=length_reason,
        hf_config=hf_config, generation_config=generation_config,
        tokenizer_dir=Path(tokenizer.path) if tokenizer.path else None,
        meta={"tokenizer_fingerprint": tokenizer.fingerprint, "source_checkpoint": None,
              "post_training": False, "seq_len": config.data.seq_len, **assembly.checkpoint_meta()})
    summary = train(setup)
    record_run(config, run_dir, summary)
    if expert_dir is not None:
        save_expert_run(expert_dir, run_dir / "final", source.family, config.training.active_expert, setup.tokenizer_dir)
    return summary


def _expert_checkpoint_dir(config: Config) -> Path | None:
    """checkpoint.expert_checkpoint_dir, which only a sequential expert run (training.active_expert) uses."""
    directory = config.checkpoint.expert_checkpoint_dir
    if directory is None:
        return None
    if config.training.active_expert is None:
        raise UserError("--expert-checkpoint-dir is for sequential expert runs: give --active-expert I too")
    return Path(directory)


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


def _check_early_stopping(config: Config, has_validation: bool) -> None:
    if config.training.early_stopping_patience and not has_validation:
        raise UserError("training.early_stopping_patience needs validation data: set --val-split above 0 "
                        "or give --val-data")

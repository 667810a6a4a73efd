"""`temper post-train`: continue training a checkpoint on new data, watching what it forgets.

Assembly only: resolve and load the source checkpoint, decide which of its optimizer,
schedule and step counter carry over, build the new/old data mix with a val:new and a
val:original split, then run the shared loop.
"""

from __future__ import annotations

from pathlib import Path

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import Checkpoint, load_checkpoint, read_meta
from tempering.checkpoint.model_loading import load_checkpoint_tokenizer
from tempering.checkpoint.paths import is_checkpoint_dir
from tempering.checkpoint.resolution import (
    fill_config_placeholders,
    record_run,
    resolve_source_checkpoint,
    source_names,
    validate_source_checkpoint,
)
from tempering.config import load_config
from tempering.config.schema import Config
from tempering.data.datasets import build_lm_data, is_shard_dir, make_batches
from tempering.errors import UserError
from tempering.tracking.console import console
from tempering.training.assembly import assemble, source_from_checkpoint
from tempering.training.causal_lm import CausalLM
from tempering.training.device import pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, TrainState, train
from tempering.training.masked_lm import MaskedLM, prepare_masked_lm, save_run_tokenizer
from tempering.training.run_dir import prepare_run_dir
from tempering.training.speech_families import is_speech_family
from tempering.training.tasks import resolve_task


def run_post_train(config: Config, *, cli_checkpoint: str | None = None, restart: bool = False) -> dict:
    """Post-train the resolved source checkpoint on config.data (new) and config.data.old_datasets."""
    source_path, origin = resolve_source_checkpoint(config, cli_checkpoint)
    console.print(f"source checkpoint: {origin}")
    source = load_checkpoint(source_path)
    if is_speech_family(source.family):  # the model type comes from the checkpoint: no flag needed
        from tempering.training.speech import run_speech_post_train

        return run_speech_post_train(config, source, restart=restart)
    config = fill_config_placeholders(config, source_names(source.meta))
    from tempering.training.captioning_run import run_captioning, trains_captions

    if trains_captions(source.family):  # an image captioner: its own data and objective
        return run_captioning(config, source=source, restart=restart)
    if config.training.best_metric == "exact_match":
        raise UserError(f"training.best_metric=exact_match scores greedy captions; {source.path} holds a "
                        f"{source.family.name} model: use new or original")
    model_source = source_from_checkpoint(source, config.model)
    family, arch = model_source.family, model_source.arch
    task = resolve_task(config, family, arch)
    if task == "token_classification":
        from tempering.training.ner import run_ner

        return run_ner(config, source=source, restart=restart)
    tokenizer = load_checkpoint_tokenizer(source, config.tokenizer.path)
    if source.meta.get("tokenizer_fingerprint") not in (None, tokenizer.fingerprint):
        raise UserError(f"tokenizer {tokenizer.path} (fingerprint {tokenizer.fingerprint}) is not the one "
                        f"{source.path} was trained with ({source.meta['tokenizer_fingerprint']})")
    train_batches, val_sets = build_post_train_data(config, tokenizer, family.vocab_size(arch), source)
    if config.checkpoint.validate:
        validate_source_checkpoint(source.path, data_fingerprints=_fingerprints(config))
    context = family.context_length(arch)
    if context is not None and config.data.seq_len > context:
        raise UserError(f"data.seq_len ({config.data.seq_len}) is longer than the model's context ({context})")
    check_reset_step(config, source, restart)
    if config.lora.r is not None and not config.checkpoint.reset_optimizer:
        console.print("LoRA trains new adapters: the source's optimizer moments (of its full weights) are not used")
        config.checkpoint.reset_optimizer = True
    device = pick_device(config.training.device)
    objective, run_tokenizer = CausalLM(), None
    if task == "masked_lm":  # continued masked-LM pretraining of an encoder
        run_tokenizer, _, train_batches, val_sets = prepare_masked_lm(config, tokenizer, train_batches, val_sets)
        objective, tokenizer = MaskedLM(), run_tokenizer
    assembly = assemble(config, model_source, objective, device=device, vocab_size=tokenizer.vocab_size)
    initial_state, schedule_offset = carry_over_state(config, source, assembly.optimizer)
    report_learning_rate(config, source)
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)
    if run_tokenizer is not None:
        save_run_tokenizer(run_tokenizer, run_dir)

    new_steps, length_reason = count_total_steps(
        config.training, train_batches.batches_per_epoch, samples_per_batch=config.training.batch_size,
        tokens_per_batch=config.training.batch_size * config.data.seq_len)
    resets = {name: getattr(config.checkpoint, f"reset_{name}") for name in ("optimizer", "scheduler", "step")}
    hf_config, generation_config = assembly.checkpoint_configs(tokenizer, config)
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, static_shapes=task == "causal_lm",
        train_batches=train_batches, val_sets=val_sets, device=device,
        total_steps=initial_state.step + new_steps, length_reason=length_reason,
        hf_config=hf_config, generation_config=generation_config,
        tokenizer_dir=Path(tokenizer.path) if tokenizer.path else None,
        meta={"tokenizer_fingerprint": tokenizer.fingerprint, "source_checkpoint": str(source.path),
              "post_training": True, "strategy": config.data.strategy, "reset": resets,
              "seq_len": config.data.seq_len, **assembly.checkpoint_meta()},
        best_split=f"val:{config.training.best_metric}" if f"val:{config.training.best_metric}" in val_sets
        else next(iter(val_sets), "val"),
        initial_state=initial_state, schedule_offset=schedule_offset)
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def build_post_train_data(config: Config, tokenizer, vocab_size: int, source: Checkpoint):
    """Training batches by data.strategy, and val:new / val:original validation sets."""
    strategy = config.data.strategy
    if strategy != "new_only" and not config.data.old_datasets:
        raise UserError(f"data.strategy {strategy} trains on old and new data: give the original data with "
                        "--old-dataset PATH (data.old_datasets)")
    new = build_lm_data(config, tokenizer, vocab_size, val_split=config.validation_split())
    val_sets = {"val:new": new.val_sets["val"]} if new.val_sets else {}
    if config.data.old_datasets:
        old_config = config.model_copy(deep=True)
        old_config.data.datasets, old_config.data.val_data = old_config.data.old_datasets, []
        old = build_lm_data(old_config, tokenizer, vocab_size)
        original_val = old.val_sets.get("val")
    else:
        old, original_val = None, _source_run_validation(source, tokenizer, vocab_size)
    if original_val:
        val_sets["val:original"] = original_val
    else:
        console.print("no original validation data found (give --old-dataset): only val:new is watched")
    if strategy == "new_only":
        return new.train_batches, val_sets
    packed, weights = old.train_packed + new.train_packed, old.weights + new.weights
    return make_batches(packed, weights, config, shuffle=strategy == "combined"), val_sets


def _source_run_validation(source: Checkpoint, tokenizer, vocab_size: int):
    """The validation set of the run that produced the source checkpoint, rebuilt from its config.yaml."""
    for run_dir in (source.path.parent, source.path.parent.parent):
        frozen = run_dir / "config.yaml"
        if frozen.is_file() and not is_checkpoint_dir(run_dir):
            try:
                source_config = load_config(frozen)
                return build_lm_data(source_config, tokenizer, vocab_size,
                                     val_split=source_config.validation_split()).val_sets.get("val")
            except UserError as exc:
                console.print(f"cannot rebuild the original validation set from {frozen}: {exc}")
                return None
    return None


def carry_over_state(config: Config, source: Checkpoint, optimizer, *, fresh_because: str | None = None,
                     reset_optimizer_because: str | None = None) -> tuple[TrainState, int]:
    """Load the source's optimizer / schedule position / step unless reset; print what happened.

    `fresh_because` starts all three fresh (a new task head); `reset_optimizer_because` resets
    the optimizer whatever the config says (the head's shape changed).
    """
    resets = config.checkpoint
    origin = "imported from Hugging Face" if source.meta.get("imported_from") else (
        "merged from expert runs" if source.meta.get("merged_from") else None)
    if origin and not source.has_trainer_state:
        fresh_because = fresh_because or f"{source.path} was {origin}"
    if fresh_because:
        console.print(f"post-training state — {fresh_because}: fresh optimizer, schedule and step counter")
        return TrainState(step=0), 0
    if reset_optimizer_because and not resets.reset_optimizer:
        console.print(f"optimizer: reset because {reset_optimizer_because}")
        resets = resets.model_copy(update={"reset_optimizer": True})
    needs_state = not (resets.reset_optimizer and resets.reset_scheduler and resets.reset_step)
    trainer_state = None
    if needs_state:
        if not source.has_trainer_state:
            raise UserError(f"{source.path} has no trainer_state.pt to continue from; add --reset-optimizer "
                            "--reset-scheduler --reset-step for a fresh fine-tune from its weights")
        trainer_state = source.load_trainer_state()
    lines = []
    if resets.reset_optimizer:
        lines.append("optimizer: reset (fresh AdamW moments)")
    else:
        fresh_groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        try:
            optimizer.load_state_dict(trainer_state["optimizer"])
        except ValueError as exc:
            raise UserError(f"the source optimizer state does not fit this run's parameter groups ({exc}); "
                            "freezing or per-group LRs change them — add --reset-optimizer") from None
        for group, fresh in zip(optimizer.param_groups, fresh_groups, strict=True):
            group.update(fresh)  # this run's lr, weight decay and betas, the source's moments
        lines.append(f"optimizer: loaded from {source.path} (AdamW moments of {len(optimizer.state)} tensors)")
    source_step = int(trainer_state["train_state"]["step"]) if trainer_state else int(source.meta.get("step", 0))
    schedule_step = int(trainer_state["scheduler"]["step"]) if trainer_state else source_step
    start_step = 0 if resets.reset_step else source_step
    offset = 0 if resets.reset_scheduler else schedule_step
    lines.append("scheduler: reset (warmup and decay start over)" if resets.reset_scheduler
                 else f"scheduler: continued from position {schedule_step}")
    lines.append("step counter: reset to 0" if resets.reset_step else f"step counter: continues from {source_step}")
    console.print("post-training state — " + "; ".join(lines))
    return TrainState(step=start_step), offset


def report_learning_rate(config: Config, source: Checkpoint) -> None:
    """Print this run's learning rate as a fraction of the source run's, with advice when it is high."""
    source_lr = source.meta.get("learning_rate")
    lr = config.training.learning_rate
    if not source_lr:
        return
    ratio = lr / source_lr
    advice = ("; for fine-tuning 1/3–1/10 of the source's LR usually forgets less (--lr)"
              if ratio > 1 / 3 else "")
    console.print(f"learning rate {lr:g} = {ratio:.2g}× the source run's {source_lr:g}{advice}")


def check_reset_step(config: Config, source: Checkpoint, restart: bool) -> None:
    """--reset-step restarts step numbers: only into an empty save_dir or this same post-training run."""
    if not config.checkpoint.reset_step or restart or config.run.save_dir is None:
        return
    save_dir = Path(config.run.save_dir)
    metas = [read_meta(path) for path in (save_dir / "final", save_dir / "best", *sorted(
        (save_dir / "checkpoints").glob("step-*"))) if (path / "meta.json").is_file()]
    foreign = [m for m in metas if not (m.get("post_training") and m.get("source_checkpoint") == str(source.path))]
    if foreign:
        raise UserError(f"--reset-step into {save_dir}, which holds checkpoints of another run, would mix two "
                        "step counters; add --restart to move that run aside, or choose another --save-dir")


def _fingerprints(config: Config) -> list[tuple[str, str | None]]:
    """(dataset path, shard fingerprint or None for raw text) for every new and old dataset."""
    from tempering.data.shards import read_manifest

    pairs = []
    for dataset in [*config.data.datasets, *config.data.old_datasets]:
        path = Path(dataset.path)
        fingerprint = read_manifest(path)["tokenizer"]["fingerprint"] if is_shard_dir(path) else None
        pairs.append((dataset.path, fingerprint))
    return pairs

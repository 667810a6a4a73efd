"""`--task ner`: train an encoder's token-classification head — from a preset, or continuing a checkpoint.

Assembly only, like every stage: where the model comes from (`pretrain`: a preset, fresh;
`post-train`: the resolved source checkpoint — an MLM backbone, an imported encoder or an
earlier NER run — with post-training's state carry-over, reset flags and strategies), the
label plan (`ner.label_mapping`), the sentences and their batches, then the shared loop with
the `token_classification` objective. A checkpoint without a token-classification head gets
one with the data's labels (fresh optimizer, schedule and step counter: a new task); a NER
checkpoint keeps its labels at their ids, and under `merge` gains the new ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import Checkpoint
from tempering.checkpoint.model_loading import load_checkpoint_tokenizer
from tempering.checkpoint.resolution import record_run, source_names, validate_source_checkpoint
from tempering.config.schema import Config
from tempering.data.ner.labels import LabelPlan, plan_labels
from tempering.errors import UserError
from tempering.tokenizer import TokenizerBundle, load_tokenizer
from tempering.tokenizer.encoder_tokens import encoder_tokens
from tempering.tracking.console import console, print_table
from tempering.training.assembly import (
    ModelSource,
    assemble,
    source_from_checkpoint,
    source_from_preset,
)
from tempering.training.device import pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, TrainState, train
from tempering.training.ner_data import build_ner_batches, describe_read, read_ner_sentences
from tempering.training.post_train import carry_over_state, check_reset_step, report_learning_rate
from tempering.training.pretrain import resolve_tokenizer_path
from tempering.training.run_dir import prepare_run_dir
from tempering.training.token_classification import TokenClassification

HEAD = "token_classification"


def run_ner(config: Config, *, source: Checkpoint | None = None, restart: bool = False) -> dict:
    """Train token classification from config.model's preset (source None) or continue `source`."""
    model_source, tokenizer = _start(config, source)
    family = model_source.family
    sentences = read_ner_sentences(config, source)
    console.print(describe_read(sentences))
    checkpoint_labels = _head_labels(model_source.arch) if source is not None else ()
    plan = plan_labels(checkpoint_labels, sentences.labels(config), config.ner.label_mapping,
                       str(source.path) if source is not None else "the preset")
    print_table("labels", ["id", "label", "status", "in the training data"], plan.rows(sentences.tag_counts()),
                to_stdout=False)
    arch = family.with_task_head(model_source.arch, HEAD, plan.labels)
    model_source = replace(model_source, arch=arch)
    context = family.context_length(arch)
    if context is not None and config.data.seq_len > context:
        raise UserError(f"data.seq_len ({config.data.seq_len}) is longer than the model's context ({context})")
    batches = build_ner_batches(config, sentences, plan.labels, tokenizer, encoder_tokens(tokenizer),
                                post_training=source is not None)
    if config.training.early_stopping_patience and not batches.val_sets:
        raise UserError("training.early_stopping_patience needs validation data: set --val-split above 0 or "
                        "give --val-data")
    if source is not None:
        if config.checkpoint.validate:
            validate_source_checkpoint(source.path, data_fingerprints=[])
        check_reset_step(config, source, restart)
    device = pick_device(config.training.device)
    assembly = assemble(config, model_source, TokenClassification(plan.labels), device=device,
                        vocab_size=tokenizer.vocab_size)
    initial_state, schedule_offset = _starting_state(config, source, assembly.optimizer, checkpoint_labels, plan)
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)

    steps, length_reason = count_total_steps(config.training, batches.train.batches_per_epoch,
                                             samples_per_batch=config.training.batch_size, tokens_per_batch=None)
    console.print(f"model: {family.name} ({assembly.num_parameters() / 1e6:.2f}M parameters) on {device}; "
                  f"{len(plan.labels)} labels; {batches.num_train_sentences:,} training sentences, "
                  f"{batches.train.batches_per_epoch} batches per epoch; {steps} steps")
    hf_config, _ = assembly.checkpoint_configs(tokenizer, config)
    best_split = f"val:{config.training.best_metric}"
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, train_batches=batches.train, val_sets=batches.val_sets,
        device=device, total_steps=initial_state.step + steps, length_reason=length_reason, hf_config=hf_config,
        tokenizer_dir=Path(tokenizer.path) if tokenizer.path else None,
        meta=_meta(config, source, tokenizer, plan, assembly.checkpoint_meta()),
        best_split=best_split if best_split in batches.val_sets else next(iter(batches.val_sets), "val"),
        initial_state=initial_state, schedule_offset=schedule_offset)
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def _start(config: Config, source: Checkpoint | None) -> tuple[ModelSource, TokenizerBundle]:
    """The model source and tokenizer: a preset with the run's tokenizer, or the checkpoint with its own."""
    if source is None:
        tokenizer = load_tokenizer(resolve_tokenizer_path(config))
        return source_from_preset(config.model, tokenizer.vocab_size), tokenizer
    model_source = source_from_checkpoint(source, config.model)
    tokenizer = load_checkpoint_tokenizer(source, config.tokenizer.path)
    if source.meta.get("tokenizer_fingerprint") not in (None, tokenizer.fingerprint):
        raise UserError(f"tokenizer {tokenizer.path} (fingerprint {tokenizer.fingerprint}) is not the one "
                        f"{source.path} was trained with ({source.meta['tokenizer_fingerprint']})")
    return model_source, tokenizer


def _head_labels(arch) -> tuple[str, ...]:
    """The labels of a checkpoint's token-classification head (none for an MLM or bare encoder)."""
    return tuple(arch.labels) if getattr(arch, "head", None) == HEAD else ()


def _starting_state(config: Config, source: Checkpoint | None, optimizer, checkpoint_labels: tuple[str, ...],
                    plan: LabelPlan) -> tuple[TrainState, int]:
    """Step counter and schedule position to start from (and the optimizer state loaded), as post-training does."""
    if source is None:
        return TrainState(), 0
    report_learning_rate(config, source)
    fresh = None if checkpoint_labels else f"{source.path} has no token-classification head (one is added)"
    reset = f"the head gained labels ({', '.join(plan.added)})" if checkpoint_labels and plan.added else None
    return carry_over_state(config, source, optimizer, fresh_because=fresh, reset_optimizer_because=reset)


def _meta(config: Config, source: Checkpoint | None, tokenizer: TokenizerBundle, plan: LabelPlan,
          model_meta: dict) -> dict:
    """Checkpoint meta.json of a token-classification run."""
    meta = {"tokenizer_fingerprint": tokenizer.fingerprint, "task": HEAD, "seq_len": config.data.seq_len,
            "source_checkpoint": str(source.path) if source is not None else None,
            "post_training": source is not None, **model_meta}
    if source is not None:
        meta.update(strategy=config.data.strategy, labels_added=list(plan.added),
                    reset={name: getattr(config.checkpoint, f"reset_{name}") for name in ("optimizer", "scheduler",
                                                                                           "step")},
                    backbone=config.checkpoint.backbone or source_names(source.meta).get("backbone"))
    else:
        meta["backbone"] = config.model.preset
    return meta

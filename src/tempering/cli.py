"""The `temper` command: argument parsing only; the work happens in the packages.

Every training-like command takes an optional `--config FILE`, positional
`key=value` overrides in dot notation, and flags that are sugar for config keys
(`--lr 1e-4` is `training.learning_rate=1e-4`). Precedence: file < flags < overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tempering import __version__
from tempering.allocator import bound_onednn_cache, pin_mmap_threshold
from tempering.argparsing import (
    Parser,
    add_underscore_spellings,
    command_parser,
    command_summaries,
    first_unknown_flag,
    ranged,
    unknown_flag_message,
)
from tempering.errors import EXIT_USER_ERROR, UserError

OVERRIDE_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")  # key=value, key.sub=value, ... (config validates the key)
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit integer


POSITIVE_INT = ranged(int, low=1, what="give a whole number of at least 1")


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key."""

    flag: str
    key: str
    type: Callable = str
    metavar: str | None = None
    is_switch: bool = False  # a store_true flag that sets the key to `switch_value`
    switch_value: str = "true"
    help: str | None = None  # default: the key's schema description
    aliases: tuple[str, ...] = ()  # other spellings users bring from other tools


PREP_FLAGS = [
    Flag("--val-fraction", "prep.val_fraction", float, "F"),
    Flag("--seq-len", "prep.seq_len", int, "N"),
    Flag("--text-unit", "prep.text_unit", str, "block|file|line"),
    Flag("--text-field", "prep.text_field", str, "NAME"),
    Flag("--invalid-utf8", "prep.invalid_utf8", str, "replace|skip"),
    Flag("--max-bad-line-fraction", "prep.max_bad_line_fraction", float, "F"),
    # Corpus processing stages (all off by default).
    Flag("--workers", "prep.workers", int, "N"),
    Flag("--chunk-size", "prep.chunk_size", int, "N"),
    Flag("--chunk-unit", "prep.chunk_unit", str, "chars|tokens"),
    Flag("--near-dedup", "prep.near_dedup", is_switch=True),
    Flag("--minhash-perm", "prep.minhash_perm", int, "N"),
    Flag("--near-dedup-threshold", "prep.near_dedup_threshold", float, "J"),
    Flag("--near-dedup-bands", "prep.near_dedup_bands", int, "B"),
    Flag("--near-dedup-rows", "prep.near_dedup_rows", int, "R"),
    Flag("--verify-jaccard", "prep.verify_jaccard", is_switch=True),
    Flag("--ppl-model", "prep.ppl_model", str, "CHECKPOINT"),
    Flag("--ppl-keep", "prep.ppl_keep", str, "LOW:HIGH"),
    Flag("--ppl-max", "prep.ppl_max", float, "PPL"),
    Flag("--ppl-max-tokens", "prep.ppl_max_tokens", int, "N"),
    Flag("--ppl-batch-size", "prep.ppl_batch_size", int, "N"),
    Flag("--ppl-report-only", "prep.ppl_report_only", is_switch=True),
    Flag("--quality-filter", "prep.quality_filter", is_switch=True),
    Flag("--quality-min-words", "prep.quality_min_words", int, "N"),
    Flag("--quality-max-words", "prep.quality_max_words", int, "N"),
    Flag("--quality-min-mean-word-length", "prep.quality_min_mean_word_length", float, "L"),
    Flag("--quality-max-mean-word-length", "prep.quality_max_mean_word_length", float, "L"),
    Flag("--quality-max-symbol-ratio", "prep.quality_max_symbol_ratio", float, "F"),
    Flag("--quality-max-non-alpha-words", "prep.quality_max_non_alpha_words", float, "F"),
    Flag("--quality-max-ellipsis-lines", "prep.quality_max_ellipsis_lines", float, "F"),
    Flag("--quality-max-bullet-lines", "prep.quality_max_bullet_lines", float, "F"),
    Flag("--quality-max-duplicate-lines", "prep.quality_max_duplicate_lines", float, "F"),
    Flag("--quality-max-duplicate-ngrams", "prep.quality_max_duplicate_ngrams", float, "F"),
    Flag("--dataset-limit", "prep.dataset_limit", str, "NAME=N[docs|tokens],..."),
    Flag("--max-source-fraction", "prep.max_source_fraction", float, "F"),
]


TRAINING_FLAGS = [
    Flag("--preset", "model.preset", str, "NAME"),
    Flag("--tokenizer", "tokenizer.path", str, "DIR"),
    Flag("--save-dir", "run.save_dir", str, "DIR"),
    Flag("--seed", "run.seed", int, "N"),
    Flag("--seq-len", "data.seq_len", int, "N"),
    Flag("--val-split", "data.val_split", float, "F"),
    Flag("--max-steps", "training.max_steps", int, "N"),
    Flag("--epochs", "training.epochs", float, "N"),
    Flag("--num-training-tokens", "training.num_training_tokens", int, "N"),
    Flag("--batch-size", "training.batch_size", int, "N"),
    Flag("--grad-accum", "training.grad_accum", int, "N"),
    Flag("--effective-batch-size", "training.effective_batch_size", int, "N"),
    Flag("--lr", "training.learning_rate", float, "LR", aliases=("--learning-rate",)),
    Flag("--wd", "training.weight_decay", float, "WD", aliases=("--weight-decay",)),
    Flag("--warmup-steps", "training.warmup_steps", int, "N"),
    Flag("--lr-schedule", "training.lr_schedule", str, "cosine|constant|wsd"),
    Flag("--eval-steps", "training.eval_steps", int, "N"),
    Flag("--save-steps", "training.save_steps", int, "N"),
    Flag("--early-stopping-patience", "training.early_stopping_patience", int, "N"),
    Flag("--device", "training.device", str, "auto|cpu|cuda|mps"),
    Flag("--precision", "training.precision", str, "auto|fp32|bf16|fp16"),
    Flag("--compile", "training.compile", is_switch=True,
         help="Always torch.compile the training step (default auto: only fixed-shape runs of 1000+ steps; "
              "see training.compile)."),
    Flag("--no-compile", "training.compile", is_switch=True, switch_value="false",
         help="Never compile the training step [training.compile=false]."),
    Flag("--gradient-checkpointing", "training.gradient_checkpointing", is_switch=True),
    Flag("--report-to", "tracking.report_to", str, "tensorboard,mlflow,wandb|all|none"),
]


TASK_FLAG = Flag("--task", "task", str, "ner", help="Train token classification (NER) with an encoder: a head "
                 "on the data's labels, entity F1 at validation [task=token_classification].")
OBJECTIVE_FLAG = Flag("--objective", "task", str, "clm|mlm", help="Pretraining objective: clm (next token, decoders) "
                      "or mlm (masked LM, encoders); default: the preset's family's own [task].")


def _pattern_list(text: str) -> str:
    """`--train-only router,lm_head` as the YAML list the config key takes."""
    return json.dumps([part.strip() for part in text.split(",") if part.strip()])


TRAIN_ONLY_FLAG = Flag("--train-only", "training.train_only", _pattern_list, "PATTERNS",
                       help="Train only parameters matching these comma-separated patterns ('router' for a "
                            "mixture of experts' routers); freeze the rest [training.train_only].")
EXPERT_FLAGS = [
    Flag("--active-expert", "training.active_expert", int, "I"),
    Flag("--expert-checkpoint-dir", "checkpoint.expert_checkpoint_dir", str, "DIR"),
    Flag("--freeze-shared", "training.freeze_shared", is_switch=True),
]


LORA_FLAGS = [
    Flag("--lora-r", "lora.r", int, "R"),
    Flag("--lora-alpha", "lora.alpha", float, "A"),
    Flag("--lora-dropout", "lora.dropout", float, "P"),
]


DEFAULT_LM_BEAM = 16
DEFAULT_LM_WEIGHT = 0.5  # transcribe --lm-text: weight of the word model's ln-probability
DEFAULT_WORD_BONUS = 1.0  # and the score added per completed word
ASR_CHECKPOINT_FLAG = Flag("--asr-checkpoint", "speech.asr_checkpoint", str, "PATH")
POST_TRAIN_FLAGS = [flag for flag in TRAINING_FLAGS if flag.flag != "--preset"] + LORA_FLAGS + [TRAIN_ONLY_FLAG] + [
    ASR_CHECKPOINT_FLAG,
    TASK_FLAG,
    Flag("--strategy", "data.strategy", str, "new_only|combined|append"),
    Flag("--reset-optimizer", "checkpoint.reset_optimizer", is_switch=True),
    Flag("--reset-scheduler", "checkpoint.reset_scheduler", is_switch=True),
    Flag("--reset-step", "checkpoint.reset_step", is_switch=True),
    Flag("--select", "checkpoint.select", str, "best|final|latest"),
    Flag("--best-metric", "training.best_metric", str, "new|original|exact_match"),
]


CHAT_FLAGS = [flag for flag in TRAINING_FLAGS if flag.flag != "--preset"] + LORA_FLAGS + [
    Flag("--template", "sft.template", str, "NAME"),
    Flag("--select", "checkpoint.select", str, "best|final|latest"),
]
SFT_FLAGS = CHAT_FLAGS + [Flag("--pack-length", "sft.pack_length", int, "N")]
DPO_FLAGS = CHAT_FLAGS + [
    Flag("--beta", "dpo.beta", float, "B"),
    Flag("--loss-type", "dpo.loss_type", str, "sigmoid|ipo|hinge"),
    Flag("--label-smoothing", "dpo.label_smoothing", float, "E"),
    Flag("--ref-checkpoint", "dpo.ref_checkpoint", str, "PATH"),
    Flag("--precompute-ref", "dpo.precompute_ref", is_switch=True),
]


def _field_help(key: str) -> str:
    """The schema's one-line help for a dotted key."""
    from tempering.config.loading import iter_fields

    for dotted, field in iter_fields():
        if dotted == key:
            return f"{field.description} [{key}]"
    raise KeyError(key)  # a flag pointing at a missing key is a bug, caught by tests


def _add_config_arguments(parser: argparse.ArgumentParser, flags: list[Flag]) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (optional; flags and overrides apply on top).")
    for flag in flags:
        help_text = flag.help or _field_help(flag.key)
        if flag.is_switch:
            parser.add_argument(flag.flag, *flag.aliases, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag.flag, *flag.aliases, type=flag.type, metavar=flag.metavar, help=help_text)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="Override any config key in dot notation, e.g. training.learning_rate=1e-4 data.datasets.0.weight=2.")


def _overrides_from(args: argparse.Namespace, flags: list[Flag]) -> list[str]:
    """Flag values first, then explicit overrides, so explicit overrides win."""
    overrides = []
    fmt = {"format": args.format} if getattr(args, "format", None) else {}
    for attr, key in (("data", "data.datasets"), ("val_data", "data.val_data")):
        paths = getattr(args, attr, None)
        if paths:  # JSON is YAML: a list of {path: ...} datasets
            overrides.append(f"{key}={json.dumps([{'path': p, **fmt} for p in paths])}")
    if getattr(args, "no_packing", False):
        overrides.append("sft.packing=false")
    set_by: dict[str, str] = {}
    for flag in flags:
        value = getattr(args, flag.flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            if flag.key in set_by:
                raise UserError(f"give {set_by[flag.key]} or {flag.flag}, not both (both set {flag.key})")
            set_by[flag.key] = flag.flag
            overrides.append(f"{flag.key}={flag.switch_value if flag.is_switch else value}")
    return overrides + list(getattr(args, "overrides", []) or [])


def _split_paths_and_overrides(args: argparse.Namespace, attr: str) -> None:
    """`--input a b key.x=1` swallows the override into the path list; move it back."""
    values = getattr(args, attr) or []
    setattr(args, attr, [v for v in values if not OVERRIDE_PATTERN.match(v)])
    args.overrides = [v for v in values if OVERRIDE_PATTERN.match(v)] + list(args.overrides or [])


def _load(args: argparse.Namespace, flags: list[Flag], stage: str, extra: tuple | list = ()):
    """The config: file, then the stage and `extra`, then flags, then explicit overrides."""
    from tempering.config import load_config
    from tempering.offline import apply_offline_switches

    config = load_config(args.config, [f"stage={stage}", *extra, *_overrides_from(args, flags)])
    apply_offline_switches(config.offline)
    return config


# ---------------------------------------------------------------- commands


def cmd_config_show(args: argparse.Namespace) -> None:
    """Print the resolved config."""
    from tempering.config import dump_config, load_config

    if args.file and OVERRIDE_PATTERN.match(args.file):  # `config show key=value` with no file
        args.overrides, args.file = [args.file, *args.overrides], None
    print(dump_config(load_config(args.file, args.overrides)), end="")


def cmd_config_schema(args: argparse.Namespace) -> None:
    """Print every config key with type, default and help."""
    from tempering.config.loading import schema_rows

    rows = schema_rows()
    for key, type_name, default, help_text in rows:
        print(f"{key}  ({type_name}, default {default})\n    {help_text}")


def cmd_presets(args: argparse.Namespace) -> None:
    """List model presets, family by family, with computed parameter counts."""
    from tempering.models.registry import all_presets
    from tempering.tracking.console import print_table

    by_family: dict[str, list] = {}
    for name, family, arch in all_presets():
        by_family.setdefault(family.name, []).append((name, family, arch))
    print("Model presets (parameters counted at each preset's vocab; a run's follows its tokenizer)")
    for family_name, presets in by_family.items():  # one table per family: each has its own dimensions
        dimensions = list(dict.fromkeys(key for _, family, arch in presets for key in family.summary(arch)))
        rows = [[name, *(family.summary(arch).get(key, "-") for key in dimensions),
                 f"{family.count_parameters(arch) / 1e6:.2f}M", f"{family.count_active_parameters(arch) / 1e6:.2f}M",
                 f"{family.count_non_embedding_parameters(arch) / 1e6:.2f}M"]
                for name, family, arch in presets]
        print_table(f"{family_name} family", ["preset", *dimensions, "params", "active/token", "non-embedding"], rows)


def cmd_runs(args: argparse.Namespace) -> None:
    """List run directories with their status, progress and best validation metric."""
    from tempering.tracking.console import print_table
    from tempering.tracking.runs import describe_run, find_run_dirs

    roots = [Path(d) for d in (args.dirs or ["."])]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        raise UserError(f"temper runs: {missing[0]} is not a directory")
    rows = [describe_run(run_dir) for run_dir in find_run_dirs(roots)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = [[_short_path(r["path"]), r["name"] or "-", r["stage"] or "-", r["model"], r["status"],
              f"{r['step']}/{r['total_steps'] if r['total_steps'] is not None else '?'}",
              "-" if r["best_value"] is None else f"{r['best_metric']} {r['best_value']:.4g} @ {r['best_step']}",
              r["updated"]] for r in rows]
    print_table(f"{len(rows)} run(s) under {', '.join(map(str, roots))}",
                ["run dir", "name", "stage", "model", "status", "step", "best val", "updated"], table, left_columns=5)


def _short_path(path: str) -> str:
    """A path relative to the current directory when it is below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def cmd_import(args: argparse.Namespace) -> None:
    """Convert a local Hugging Face model directory into a Tempering checkpoint."""
    from tempering.checkpoint.hf_import import import_hf_model

    import_hf_model(args.source, args.output)


def cmd_merge_experts(args: argparse.Namespace) -> None:
    """Assemble the experts of sequential expert runs into one checkpoint."""
    from tempering.training.expert_runs import merge_experts

    merge_experts(Path(args.expert_checkpoint_dir), Path(args.output))


def cmd_sample_corpus(args: argparse.Namespace) -> None:
    """Write the built-in sample corpus."""
    from tempering.data.sample_corpus import write_sample_corpus
    from tempering.tracking.console import print_table

    if args.images:
        from tempering.data.images.sample import write_sample_images

        summary = write_sample_images(Path(args.output), num_images=args.num_images, seed=args.seed,
                                      recolour=args.recolour)
        rows = [[f"{name}/{split}", count] for name, splits in summary.items() for split, count in splits.items()]
        print_table(f"Sample images written to {args.output} (scenes.json, words.json)", ["part", "images"], rows)
        return
    summary = write_sample_corpus(Path(args.output), val_fraction=args.val_fraction)
    rows = [[f"{domain}/{split}", s["documents"], f"{s['bytes'] / 1e6:.2f}"]
            for domain, splits in summary.items() for split, s in splits.items()]
    print_table(f"Sample corpus written to {args.output}", ["part", "documents", "MB"], rows)


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    """Train a byte-level BPE tokenizer on files, directories or globs."""
    from tempering.config.schema import PrepConfig
    from tempering.data.sources import SourceStats, discover_files, iter_documents
    from tempering.tokenizer import train_tokenizer
    from tempering.tracking.console import console

    files = discover_files(args.input)
    options = PrepConfig(text_unit=args.text_unit, text_field=args.text_field)
    texts = iter_documents(files, options, SourceStats())
    bundle = train_tokenizer(texts, args.vocab_size, Path(args.output), min_frequency=args.min_frequency,
                             overwrite=args.overwrite)
    console.print(f"tokenizer: {bundle.vocab_size} tokens, fingerprint {bundle.fingerprint}, saved to {args.output}")


def cmd_prep(args: argparse.Namespace) -> None:
    """Tokenize raw files into token shards, or list audio files and transcripts in a speech CSV."""
    from tempering.data.prep import run_prep

    _split_paths_and_overrides(args, "input")
    config = _load(args, PREP_FLAGS, "prep")
    if args.format in ("audio_asr", "audio_tts"):
        _prep_audio(args, config.prep.val_fraction)
        return
    if args.format == "images":
        from tempering.data.images.prep import prep_images

        prep_images(args.input, args.output, caption_file=args.caption_file, val_fraction=config.prep.val_fraction)
        return
    if args.caption_file:
        raise UserError("--caption-file pairs images with captions: use it with --format images")
    if not args.tokenizer:
        raise UserError("temper prep: give --tokenizer DIR (token shards need a tokenizer; audio data takes "
                        "--format audio_asr or audio_tts, images --format images)")
    scorer = None
    if config.prep.ppl_model:
        from tempering.evaluation.document_perplexity import DocumentPerplexity

        scorer = DocumentPerplexity(config.prep.ppl_model, max_tokens=config.prep.ppl_max_tokens,
                                    batch_size=config.prep.ppl_batch_size)
    run_prep(args.input, args.tokenizer, args.output, config.prep, scorer=scorer)


def _prep_audio(args: argparse.Namespace, val_fraction: float) -> None:
    """`temper prep --format audio_asr|audio_tts`: write the speech CSV and print what was kept and skipped."""
    from tempering.data.audio.prep import AudioPrepOptions, prep_audio
    from tempering.tracking.console import console

    if not args.input:
        raise UserError("temper prep --format " + args.format + ": give --input DIR (audio files, searched recursively)")
    options = AudioPrepOptions(kind=args.format, min_duration_s=args.min_duration or 0.0,
                               max_duration_s=args.max_duration or float("inf"), val_fraction=val_fraction,
                               transcripts=Path(args.transcripts) if args.transcripts else None,
                               phonemes=args.phonemes, voice=args.voice)
    report = prep_audio(args.input, Path(args.output), options)
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(report.skipped.items())) or "none"
    splits = ", ".join(f"{split} {count}" for split, count in sorted(report.splits.items()))
    console.print(f"wrote {args.output}: {report.written} utterances ({report.duration_s / 3600:.2f} h; {splits}); "
                  f"skipped: {skipped}")


def cmd_transcribe(args: argparse.Namespace) -> None:
    """Print the transcript of each audio file."""
    from tempering.generation.transcribe import load_asr_model, transcribe_files, word_fusion
    from tempering.tracking.console import console
    from tempering.training.device import pick_device

    if not args.lm_text and (args.lm_weight is not None or args.word_bonus is not None):
        raise UserError("--lm-weight and --word-bonus weigh the word model built from --lm-text: add --lm-text FILE, "
                        "or drop them")
    loaded = load_asr_model(args.checkpoint, device=pick_device(args.device))
    fusion = None
    if args.lm_text:
        fusion = word_fusion(loaded, args.lm_text, weight=DEFAULT_LM_WEIGHT if args.lm_weight is None else args.lm_weight,
                             bonus=DEFAULT_WORD_BONUS if args.word_bonus is None else args.word_bonus)
        console.print(f"word language model: {fusion.lm.num_words:,} words, {len(fusion.lm.bigrams):,} bigrams")
    result = transcribe_files(loaded, args.files, beam=args.beam or (DEFAULT_LM_BEAM if fusion else None),
                              fusion=fusion)
    for file, text in zip(args.files, result.texts, strict=True):
        print(text if len(args.files) == 1 else f"{file}\t{text}", flush=True)
    console.print(f"{result.audio_s:.1f} s of audio in {result.compute_s:.2f} s (real-time factor "
                  f"{result.real_time_factor:.3f})")


def cmd_pretrain(args: argparse.Namespace) -> None:
    """Pretrain a decoder LM from scratch (or resume the run in --save-dir)."""
    from tempering.training.pretrain import run_pretrain

    _split_paths_and_overrides(args, "data")
    _split_paths_and_overrides(args, "val_data")
    run_pretrain(_load(args, PRETRAIN_FLAGS, "pretrain"), restart=args.restart)


def cmd_eval(args: argparse.Namespace) -> None:
    """Report loss and perplexity of a checkpoint per dataset, or run lm-eval tasks on it."""
    from tempering.evaluation.evaluate import evaluate_checkpoint, parse_dataset_specs
    from tempering.tracking.console import print_table

    if (args.data is None) == (args.lm_eval is None):
        raise UserError("give --data PATH... (loss and perplexity) or --lm-eval TASK[,TASK...] (lm-evaluation-harness)")
    if args.lm_eval is not None:
        _run_lm_eval(args)
        return
    from tempering.evaluation.captions import evaluate_captions, is_captioner

    if is_captioner(args.checkpoint):
        rows = evaluate_captions(args.checkpoint, args.data, batch_size=args.batch_size,
                                 max_batches=args.max_batches, device=args.device)
        if args.json:
            print(json.dumps(rows))
            return
        print_table(f"{args.checkpoint}: captions", ["dataset", "images", "caption tokens", "loss", "ppl",
                                                     "exact match", "CER"],
                    [[r["path"], r["images"], f"{r['tokens']:,}", f"{r['loss']:.4f}", f"{r['ppl']:.2f}",
                      f"{r['exact_match']:.3f}", f"{r['cer']:.3f}"] for r in rows])
        return
    datasets = parse_dataset_specs(args.data, args.limit or [])
    if _is_speech_checkpoint(args.checkpoint):
        _eval_speech(args, datasets)
        return
    result = evaluate_checkpoint(args.checkpoint, datasets, split=args.split, seq_len=args.seq_len,
                                 batch_size=args.batch_size, max_batches=args.max_batches, device=args.device)
    if args.json:
        print(json.dumps(result))
        return
    rows = [[name, r["path"], r["documents"], f"{r['tokens']:,}", f"{r['loss']:.4f}", f"{r['ppl']:.2f}"]
            for name, r in result["datasets"].items()]
    print_table(f"{result['checkpoint']} (step {result['step']}, seq_len {result['seq_len']})",
                ["dataset", "path", "documents", "tokens", "loss", "ppl"], rows)


def _is_speech_checkpoint(path: str) -> bool:
    from tempering.checkpoint.io import load_checkpoint
    from tempering.training.speech_families import is_speech_family

    return is_speech_family(load_checkpoint(path).family)


def _eval_speech(args: argparse.Namespace, datasets: list) -> None:
    """ASR: CTC loss, WER and CER; Talker: mel loss and intelligibility; of a speech checkpoint on speech CSVs."""
    from tempering.evaluation.speech_eval import evaluate_speech_checkpoint
    from tempering.tracking.console import print_table

    result = evaluate_speech_checkpoint(args.checkpoint, datasets, batch_size=args.batch_size,
                                        max_batches=args.max_batches, device=args.device,
                                        asr_checkpoint=args.asr_checkpoint)
    if args.json:
        print(json.dumps(result))
        return
    title = f"{result['checkpoint']} (step {result['step']})"
    if result["family"] == "talker":
        rows = [[name, r["path"], r["utterances"], r["dropped"], f"{r['loss']:.4f}", f"{r['mel_l1']:.4f}",
                 f"{r.get('intelligibility_cer', float('nan')):.4f}", f"{r.get('intelligibility_wer', float('nan')):.4f}"]
                for name, r in result["datasets"].items()]
        print_table(title, ["dataset", "path", "utterances", "unaligned", "loss", "mel L1", "intelligibility CER",
                            "intelligibility WER"], rows)
        return
    rows = [[name, r["path"], r["utterances"], f"{r['loss']:.4f}", f"{r['wer']:.4f}", f"{r['cer']:.4f}"]
            for name, r in result["datasets"].items()]
    print_table(title, ["dataset", "path", "utterances", "loss", "wer", "cer"], rows)


def _run_lm_eval(args: argparse.Namespace) -> None:
    from tempering.evaluation.lm_eval_bridge import parse_limit, run_lm_eval
    from tempering.tracking.console import console
    from tempering.training.device import pick_device

    tasks = [task.strip() for task in args.lm_eval.split(",") if task.strip()]
    if len(args.limit or []) > 1:
        raise UserError("--limit with --lm-eval takes one value: examples per task (N) or a fraction (0 < F < 1)")
    _, table, output = run_lm_eval(args.checkpoint, tasks, limit=parse_limit((args.limit or [None])[0]),
                                   num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                                   device=str(pick_device(args.device)), output=args.output and Path(args.output),
                                   include=[Path(d) for d in args.lm_eval_include or []])
    print(table)
    console.print(f"results written to {output}")


def cmd_generate(args: argparse.Namespace) -> None:
    """Sample a continuation of a prompt, streaming it to the terminal; or speak text into a WAV (Talker)."""
    from tempering.generation.command import run_generate

    if args.speak is not None:
        _speak(args)
        return
    if args.image is not None:
        from tempering.generation.captions import run_caption

        run_caption(args.checkpoint, args.image, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                    device=args.device)
        return
    run_generate(args.checkpoint, prompt=args.prompt, chat=args.chat, system=args.system,
                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                 top_p=args.top_p, seed=args.seed, device=args.device)


def _speak(args: argparse.Namespace) -> None:
    from tempering.generation.speak import speak_to_file
    from tempering.tracking.console import console
    from tempering.training.device import pick_device

    if args.output is None:
        raise UserError("--speak writes audio: give --output FILE.wav")
    result = speak_to_file(args.checkpoint, args.speak, Path(args.output), device=pick_device(args.device))
    console.print(f"wrote {args.output}: {result['audio_s']:.2f} s of audio saying {result['text']!r} in "
                  f"{result['compute_s']:.2f} s (real-time factor {result['compute_s'] / max(result['audio_s'], 1e-9):.3f})")
def cmd_tag(args: argparse.Namespace) -> None:
    """Tag entities with a token-classification checkpoint."""
    from tempering.generation.tagging import run_tag

    run_tag(args.checkpoint, text=args.text, input_file=args.input, output=args.output, batch_size=args.batch_size,
            device=args.device)


def cmd_plot(args: argparse.Namespace) -> None:
    """Plot runs' metrics into one PNG."""
    from tempering.tracking.console import console
    from tempering.tracking.plot import plot_runs

    output = Path(args.output) if args.output else Path(args.run_dirs[0]) / "plot.png"
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    drawn = plot_runs([Path(d) for d in args.run_dirs], output, metrics=metrics, x=args.x)
    console.print(f"wrote {output}: " + "; ".join(f"{metric} ({', '.join(labels)})" for metric, labels in drawn.items()))


def cmd_post_train(args: argparse.Namespace) -> None:
    """Continue training a checkpoint on new data."""
    from tempering.training.post_train import run_post_train

    for attr in ("new_dataset", "old_dataset"):
        _split_paths_and_overrides(args, attr)
    args.data = args.new_dataset
    overrides = []
    if args.old_dataset:
        overrides.append(f"data.old_datasets={json.dumps([{'path': p} for p in args.old_dataset])}")
    config = _load(args, POST_TRAIN_FLAGS, "post_train", overrides)
    run_post_train(config, cli_checkpoint=args.checkpoint, restart=args.restart)


def cmd_sft(args: argparse.Namespace) -> None:
    """Supervised fine-tuning on chats."""
    from tempering.training.sft import run_sft

    _split_paths_and_overrides(args, "data")
    _split_paths_and_overrides(args, "val_data")
    run_sft(_load(args, SFT_FLAGS, "sft"), cli_checkpoint=args.checkpoint, restart=args.restart)


def cmd_dpo(args: argparse.Namespace) -> None:
    """Direct preference optimisation."""
    from tempering.training.dpo import run_dpo

    _split_paths_and_overrides(args, "data")
    _split_paths_and_overrides(args, "val_data")
    run_dpo(_load(args, DPO_FLAGS, "dpo"), cli_checkpoint=args.checkpoint, restart=args.restart)


def cmd_submit(args: argparse.Namespace) -> None:
    """Submit the config's stage to SLURM as a batch job that requeues itself until training ends."""
    from tempering.config import load_config
    from tempering.slurm.submit import submit

    _split_paths_and_overrides(args, "data")
    submit(load_config(args.config, _overrides_from(args, SUBMIT_FLAGS)), dry_run=args.dry_run)


def cmd_inspect_data(args: argparse.Namespace) -> None:
    """Render chat examples as the model sees them."""
    from tempering.checkpoint.io import load_checkpoint
    from tempering.checkpoint.resolution import resolve_source_checkpoint
    from tempering.data.inspect import inspect_chat_data
    from tempering.tokenizer import load_tokenizer

    _split_paths_and_overrides(args, "data")
    config = _load(args, SFT_FLAGS, "sft")
    tokenizer_dir = config.tokenizer.path
    if tokenizer_dir is None:
        tokenizer_dir = load_checkpoint(resolve_source_checkpoint(config, args.checkpoint)[0]).tokenizer_dir
    inspect_chat_data(config, load_tokenizer(tokenizer_dir or ""), num_samples=args.num_samples)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """Build the full `temper` argument parser."""
    parser = Parser(prog="temper", description=__doc__.splitlines()[0] if __doc__ else None,
                    epilog="Run `temper COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"temper {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = commands.add_parser("config", help="Show a resolved config or the full schema.")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_commands.add_parser("show", help="Print the resolved config (file + overrides) as YAML.")
    show.add_argument("file", nargs="?", help="YAML config file (omit to see the defaults).")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="Dot-notation overrides.")
    show.set_defaults(func=cmd_config_show)
    schema = config_commands.add_parser("schema", help="Print every config key with type, default and help.")
    schema.set_defaults(func=cmd_config_schema)

    presets = commands.add_parser("presets", help="List model presets with computed parameter counts.")
    presets.set_defaults(func=cmd_presets)

    sample = commands.add_parser("sample-corpus", help="Write the built-in sample corpus (prose and code from this Python installation).")
    sample.add_argument("--output", required=True, metavar="DIR", help="Directory to write prose/ and code/ into.")
    sample.add_argument("--val-fraction", type=ranged(float, low=0, high=0.5, what="give 0 to 0.5"), default=0.05,
                        metavar="F",
                        help="Fraction of documents in each domain's val split (default 0.05).")
    sample.add_argument("--images", action="store_true",
                        help="Render the image-caption sets instead: shape scenes with compositional captions (some "
                             "colour-shape pairs held out of training) and words in matplotlib's fonts.")
    sample.add_argument("--num-images", type=POSITIVE_INT, default=4000, metavar="N",
                        help="--images: training images per set (validation: a tenth as many; default 4000).")
    sample.add_argument("--seed", type=ranged(int, low=0, high=2**32 - 1, what="give 0 to 2^32-1"), default=0,
                        metavar="S", help="--images: the seed the sets are drawn with (default 0).")
    sample.add_argument("--recolour", type=ranged(float, low=0, high=1, what="give 0 to 1"), default=0.0,
                        metavar="F", help="--images: paint this fraction of training shapes an off-palette colour, "
                                          "captioned 'other' (default 0; validation is unchanged).")
    sample.set_defaults(func=cmd_sample_corpus)

    tokenizer = commands.add_parser("tokenizer", help="Train a tokenizer.")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    train = tokenizer_commands.add_parser("train", help="Train a byte-level BPE tokenizer (HF tokenizers).")
    train.add_argument("--input", nargs="+", default=[], metavar="PATH",
                       help="Files, directories (recursive) or globs of .txt/.md/.jsonl/.parquet/.csv (default: data/raw).")
    train.add_argument("--vocab-size", type=ranged(int, low=1, high=2**31 - 1, what="give a positive number of tokens"),
                       default=8192, metavar="N", help="Vocabulary size including special tokens (default 8192).")
    train.add_argument("--output", required=True, metavar="DIR", help="Directory for tokenizer.json and its HF config files.")
    train.add_argument("--min-frequency", type=POSITIVE_INT, default=2, metavar="N",
                       help="Minimum pair count for a merge (default 2).")
    train.add_argument("--text-unit", default="block", choices=["block", "file", "line"],
                       help=".txt files: a document per blank-line block, per file or per line (default block).")
    train.add_argument("--text-field", default="text", metavar="NAME", help="JSONL field / table column holding the text (default text).")
    train.add_argument("--overwrite", action="store_true", help="Replace a tokenizer already in --output.")
    train.set_defaults(func=cmd_tokenizer_train)

    prep = commands.add_parser("prep", help="Clean, dedup and tokenize raw files into token shards; pair images "
                               "with captions (--format images); or list speech (audio + transcripts) in a CSV "
                               "(--format audio_asr|audio_tts).")
    prep.add_argument("--input", nargs="+", default=[], metavar="PATH",
                      help="Files, directories (recursive) or globs (default: data/raw).")
    prep.add_argument("--format", choices=["text", "images", "audio_asr", "audio_tts"], default="text",
                      help="text: token shards (default); images: find .png/.jpg/.jpeg/.bmp/.webp recursively, "
                           "pair them with captions and write an image-caption JSON; audio_asr / audio_tts: a "
                           "speech CSV path,transcript,duration_s for the audio encoder / the Talker.")
    prep.add_argument("--tokenizer", metavar="DIR", help="Tokenizer directory (from `temper tokenizer train`); "
                      "needed for text.")
    prep.add_argument("--output", required=True, metavar="DIR|FILE",
                      help="Shard directory (manifest.json, train/, val/); --format images: the JSON file to write "
                           "(e.g. images.json); audio formats: the CSV file.")
    prep.add_argument("--caption-file", metavar="FILE", help="--format images: captions as NAME<TAB>CAPTION or "
                      "NAME,CAPTION lines, or JSONL {\"image\", \"caption\"} (default: each image's sibling .txt).")
    prep.add_argument("--transcripts", metavar="FILE", help="Audio formats: transcripts as `path<TAB>text` lines "
                      "or a CSV with path and transcript columns (else sibling .txt, *.trans.txt, metadata.csv).")
    prep.add_argument("--min-duration", type=ranged(float, low=0, what="give seconds >= 0"), metavar="S",
                      help="Audio formats: skip files shorter than S seconds.")
    prep.add_argument("--max-duration", type=ranged(float, low=0, low_open=True, what="give seconds > 0"),
                      metavar="S", help="Audio formats: skip files longer than S seconds.")
    prep.add_argument("--phonemes", choices=["espeak"], help="Audio formats: add a phonemes column (espeak-ng IPA; "
                      "needs espeak-ng installed).")
    prep.add_argument("--voice", default="en-us", metavar="VOICE", help="espeak-ng voice for --phonemes "
                      "(default en-us).")
    _add_config_arguments(prep, PREP_FLAGS)
    prep.set_defaults(func=cmd_prep)

    pretrain = commands.add_parser(
        "pretrain", help="Pretrain a model from a preset: a decoder LM, an encoder (--objective mlm), NER "
                         "(--task ner) or an image captioner (--preset vision_* --lm CKPT); re-running the same "
                         "command resumes it.",
        description="Pretrain a model from a preset: a decoder LM on token shards (or raw .txt/.jsonl), an encoder "
                    "with masked LM on the same shards (--objective mlm; the default for encoder presets), a "
                    "token-classification (NER) model on labelled sentences (--task ner), or an image captioner "
                    "on an image-caption JSON (`temper prep --format images`; a vision preset), its captions written "
                    "by the decoder checkpoint given with --lm. Runnable from flags alone; "
                    "re-running the same command resumes from the newest checkpoint in --save-dir.")
    _add_training_arguments(pretrain)
    pretrain.set_defaults(func=cmd_pretrain)

    post = commands.add_parser(
        "post-train", help="Continue training a checkpoint on new data (domain adaptation, fine-tuning).",
        description="Continue training a checkpoint on new data. The architecture comes from the checkpoint; by "
                    "default its optimizer, schedule position and step counter carry over (each --reset-* drops "
                    "one). Every evaluation reports val:new and val:original. With --task ner (the default for a "
                    "NER checkpoint) an encoder is fine-tuned or continued on labelled sentences, its label map "
                    "kept (ner.label_mapping). Re-running the same command resumes.")
    post.add_argument("--checkpoint", metavar="PATH",
                      help="Source checkpoint or run dir (else $CHECKPOINT_PATH, checkpoint.source_path, or the "
                           "previous run recorded in the run cache).")
    post.add_argument("--new-dataset", nargs="+", action="extend", metavar="PATH",
                      help="The new training data (shard dirs or raw text; repeatable) [data.datasets].")
    post.add_argument("--old-dataset", nargs="+", action="extend", metavar="PATH",
                      help="The original data, for --strategy combined/append and val:original [data.old_datasets].")
    post.add_argument("--val-data", nargs="+", action="extend", metavar="PATH",
                      help="Separate validation data for val:new [data.val_data].")
    _add_restart(post)
    _add_config_arguments(post, POST_TRAIN_FLAGS)
    post.set_defaults(func=cmd_post_train)

    for name, func, flags, summary in (
            ("sft", cmd_sft, SFT_FLAGS, "Supervised fine-tuning on chats (instructions, tool calls, reasoning)."),
            ("dpo", cmd_dpo, DPO_FLAGS, "Preference tuning (DPO) on prompt/chosen/rejected pairs.")):
        stage = commands.add_parser(name, help=summary, description=summary + " Loss on assistant tokens "
                                    "(and their end-of-turn token) only; re-running the same command resumes.")
        stage.add_argument("--checkpoint", metavar="PATH", help="Starting model: checkpoint or run dir (else "
                           "$CHECKPOINT_PATH, checkpoint.source_path, or the previous run in the run cache).")
        stage.add_argument("--data", nargs="+", action="extend", metavar="PATH",
                           help="Training data: .jsonl/.json/.parquet files, dirs or globs (repeatable) [data.datasets].")
        stage.add_argument("--val-data", nargs="+", action="extend", metavar="PATH",
                           help="Separate validation data; else --val-split of the training data [data.val_data].")
        stage.add_argument("--format", metavar="FORMAT",
                           help="Record format of --data: auto (default, per record), messages, alpaca, tool_call, "
                                "reasoning, preference [data.datasets.N.format].")
        if name == "sft":
            stage.add_argument("--no-packing", action="store_true",
                               help="Pad one example per row instead of packing several per sequence [sft.packing].")
        _add_restart(stage)
        _add_config_arguments(stage, flags)
        stage.set_defaults(func=func)

    submit = commands.add_parser(
        "submit", help="Run a config on a SLURM cluster: an sbatch job that checkpoints before its wall time, "
                       "requeues itself and resumes until training ends.",
        description="Resolve the config (its `stage` key picks pretrain, post_train, sft or dpo), write it to "
                    "RUN_DIR/slurm/config.yaml and an sbatch script built from the slurm.* keys to "
                    "RUN_DIR/slurm/job.sh, and sbatch it; prints the job id. The job runs srun + torchrun on "
                    "slurm.num_nodes nodes (slurm.processes_per_node each). slurm.signal_time_seconds before "
                    "slurm.wall_time, training writes a checkpoint and the job requeues itself (or, where that "
                    "is refused, submits a copy that starts after it); the next job resumes from that "
                    "checkpoint. A crash is resubmitted up to slurm.max_failures times (counted in "
                    "RUN_DIR/slurm/failure_count, reset by each submit), then the job stops with the reason in "
                    "RUN_DIR/slurm/slurm-JOBID.out and .err. Exit status 2 when sbatch is missing or refuses "
                    "the job.")
    submit.add_argument("--dry-run", action="store_true",
                        help="Print the job script; write nothing and submit nothing (sbatch not needed).")
    submit.add_argument("--data", nargs="+", action="extend", metavar="PATH",
                        help="Training data: shard dirs or raw files/dirs/globs (repeatable) [data.datasets].")
    _add_config_arguments(submit, SUBMIT_FLAGS)
    submit.set_defaults(func=cmd_submit)

    inspect = commands.add_parser("inspect-data", help="Show chat examples as the model will see them, trained "
                                  "spans highlighted, with length, truncation and packing statistics.")
    inspect.add_argument("--num-samples", type=ranged(int, low=0, what="give 0 or more"), default=3, metavar="N",
                         help="Examples to show (default 3; 0 shows only the statistics).")
    inspect.add_argument("--data", nargs="+", action="extend", metavar="PATH", help="Chat data (else data.datasets).")
    inspect.add_argument("--format", metavar="FORMAT", help="Record format of --data (default auto).")
    inspect.add_argument("--checkpoint", metavar="PATH",
                         help="Take the tokenizer from this checkpoint (else tokenizer.path or checkpoint.source_path).")
    _add_config_arguments(inspect, SFT_FLAGS)
    inspect.set_defaults(func=cmd_inspect_data)

    runs = commands.add_parser(
        "runs", help="List training runs under folders: status (running, finished, early-stopped, diverged, "
                     "interrupted), step, best validation metric, last update.",
        description="Find run directories (config.yaml + metrics.jsonl) under the given folders (default: the "
                    "current directory, searched 4 levels deep) and print one row each. Reads the run files only; "
                    "never changes them. A run is `running` while a live process holds its lock.")
    runs.add_argument("dirs", nargs="*", metavar="DIR", help="Folders to search (default: .).")
    runs.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")
    runs.set_defaults(func=cmd_runs)

    importer = commands.add_parser(
        "import", help="Convert a local Hugging Face model directory (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2-MoE, DistilBERT, BERT) into a checkpoint.",
        description="Convert a local Hugging Face model directory — config.json, model.safetensors (or shards with "
                    "model.safetensors.index.json), tokenizer.json and its config — into a Tempering checkpoint that "
                    "every stage accepts with --checkpoint. The model family is read from config.json's model_type; "
                    "what Tempering cannot reproduce exactly (rope scaling, sliding windows) is refused, naming the key.")
    importer.add_argument("--from", dest="source", required=True, metavar="HF_DIR",
                          help="The Hugging Face model directory (as written by save_pretrained).")
    importer.add_argument("--output", required=True, metavar="DIR",
                          help="The checkpoint directory to create (must not exist, or be empty).")
    importer.set_defaults(func=cmd_import)

    merge = commands.add_parser(
        "merge-experts", help="Assemble the experts of sequential expert runs into one MoE checkpoint.",
        description="Assemble shared.safetensors and every expert_<I>.safetensors that `temper pretrain "
                    "--active-expert I --expert-checkpoint-dir DIR` runs wrote into one checkpoint. Then teach the "
                    "router to pick: `temper post-train --checkpoint CKPT --train-only router ...`.")
    merge.add_argument("--expert-checkpoint-dir", required=True, metavar="DIR", help="The expert runs' directory.")
    merge.add_argument("--output", required=True, metavar="CKPT", help="The checkpoint directory to create "
                       "(must not exist, or be empty).")
    merge.set_defaults(func=cmd_merge_experts)

    evaluate = commands.add_parser("eval", help="Loss and perplexity of a checkpoint on one or more datasets "
                                   "(speech recognition checkpoints: CTC loss, WER and CER on speech CSVs; Talker "
                                   "checkpoints: mel loss and intelligibility).")
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help=CHECKPOINT_HELP)
    evaluate.add_argument("--data", nargs="+", action="extend", metavar="[NAME=]PATH",
                          help="Shard dirs or raw text files/dirs/globs, optionally named (repeatable).")
    evaluate.add_argument("--limit", nargs="+", action="extend", metavar="[NAME=]N",
                          help="Use at most N documents of dataset NAME (or of every dataset); with --lm-eval, N "
                               "examples per task or a fraction F < 1.")
    evaluate.add_argument("--split", choices=["auto", "val", "train"], default="auto",
                          help="Which split of a shard dir: auto = val when it has one, else train (default auto).")
    evaluate.add_argument("--seq-len", type=POSITIVE_INT, metavar="N",
                          help="Window length (default: the one the model trained with).")
    evaluate.add_argument("--batch-size", type=POSITIVE_INT, default=8, metavar="N",
                          help="Windows per forward pass (default 8).")
    evaluate.add_argument("--max-batches", type=POSITIVE_INT, metavar="N", help="Evaluate at most N batches per dataset.")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="Device (default auto).")
    evaluate.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    evaluate.add_argument("--asr-checkpoint", metavar="PATH",
                          help="Talker checkpoints: the ASR checkpoint that aligns the references and transcribes the "
                               "synthesised speech for the intelligibility (default: the one the Talker trained with).")
    evaluate.add_argument("--lm-eval", metavar="TASK[,TASK...]",
                          help="Run EleutherAI lm-evaluation-harness tasks instead of --data, offline, through its "
                               "Hugging Face model path (needs the eval extra). Shipped local task: "
                               "tempering_next_sentence (configs/lm_eval/).")
    evaluate.add_argument("--num-fewshot", type=ranged(int, low=0, what="give 0 or more"), metavar="K",
                          help="lm-eval: few-shot examples per prompt (default: each task's own).")
    evaluate.add_argument("--lm-eval-include", nargs="+", action="extend", metavar="DIR",
                          help="lm-eval: more directories of task YAMLs (besides configs/lm_eval/).")
    evaluate.add_argument("--output", metavar="FILE.json", help="lm-eval: where to write the results JSON (default "
                          "beside the checkpoint: CHECKPOINT.lm_eval.TASKS.json).")
    evaluate.set_defaults(func=cmd_eval)

    transcribe = commands.add_parser("transcribe", help="Print the transcript of audio files with a speech "
                                     "recognition (audio_encoder) checkpoint.")
    transcribe.add_argument("--checkpoint", required=True, metavar="PATH", help=CHECKPOINT_HELP)
    transcribe.add_argument("files", nargs="+", metavar="FILE", help="Audio files (WAV, FLAC, OGG; any sample rate).")
    transcribe.add_argument("--beam", type=POSITIVE_INT, metavar="N",
                            help=f"CTC prefix beam search of width N (default: greedy best path; {DEFAULT_LM_BEAM} "
                                 "with --lm-text).")
    transcribe.add_argument("--lm-text", action="append", metavar="FILE",
                            help="A plain-text file of the domain (one sentence or paragraph a line; repeatable): the "
                                 "beam search adds a word bigram model of the text (Kneser-Ney), built at start-up.")
    transcribe.add_argument("--lm-weight", type=ranged(float, low=0.0, what="give 0 or more"), metavar="W",
                            help=f"With --lm-text: weight of the word model's ln-probability (default {DEFAULT_LM_WEIGHT}).")
    transcribe.add_argument("--word-bonus", type=float, metavar="B",
                            help="With --lm-text: score added per word, against the model's bias to short "
                                 f"transcripts (default {DEFAULT_WORD_BONUS}).")
    transcribe.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                            help="Device (default auto).")
    transcribe.set_defaults(func=cmd_transcribe)

    generate = commands.add_parser("generate", help="Continue a prompt with a trained model (KV-cached sampling).")
    generate.add_argument("--checkpoint", required=True, metavar="PATH", help=CHECKPOINT_HELP)
    generate.add_argument("--prompt", metavar="TEXT", help="Text to continue.")
    generate.add_argument("--chat", metavar="MESSAGE", help="A user message: rendered with the checkpoint's chat "
                          "template; generation stops at the template's end-of-turn token.")
    generate.add_argument("--system", metavar="TEXT", help="System message for --chat.")
    generate.add_argument("--speak", metavar="TEXT", help="Talker checkpoints: say TEXT (Griffin-Lim vocoder) into "
                          "--output.")
    generate.add_argument("--output", metavar="FILE.wav", help="With --speak: the 16 kHz WAV file to write.")
    generate.add_argument("--image", metavar="PATH", help="Caption this image with a vision checkpoint (greedy; "
                          "--prompt replaces the prompt it trained with).")
    generate.add_argument("--max-new-tokens", type=POSITIVE_INT, default=100, metavar="N",
                          help="Stop after N new tokens, N >= 1 (default 100).")
    generate.add_argument("--temperature", type=ranged(float, low=0, high=100, what="give 0 (greedy) to 100"),
                          default=0.8, metavar="T", help="Sampling temperature, 0 to 100; 0 is greedy (default 0.8).")
    generate.add_argument("--top-k", type=POSITIVE_INT, metavar="K",
                          help="Sample only among the K most likely tokens (K >= 1).")
    generate.add_argument("--top-p", type=ranged(float, low=0, high=1, low_open=True, what="give 0 < P <= 1"),
                          metavar="P", help="Sample only from the smallest set of tokens with probability mass P "
                                            "(0 < P <= 1).")
    generate.add_argument("--seed", type=ranged(int, low=0, high=MAX_SEED, what=f"give 0 to {MAX_SEED}"),
                          default=0, metavar="S", help="Sampling seed, 0 to 2^63-1 (default 0).")
    generate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="Device (default auto).")
    generate.set_defaults(func=cmd_generate)

    tag = commands.add_parser(
        "tag", help="Tag entities with a token-classification (NER) checkpoint: print them for --text, or write "
                    "tagged JSONL for --input.",
        description="Run a token-classification checkpoint over a text (its entities are printed: text, type, "
                    "score, character span) or over a JSONL file whose rows hold `tokens` (words) or `text` (each "
                    "row is written back with `ner_tags` and `entities`).")
    tag.add_argument("--checkpoint", required=True, metavar="PATH", help=CHECKPOINT_HELP)
    tag.add_argument("--text", metavar="TEXT", help="A text to tag (split into words and punctuation).")
    tag.add_argument("--input", metavar="FILE.jsonl", help="Rows with `tokens` or `text` to tag.")
    tag.add_argument("--output", metavar="FILE.jsonl", help="Where --input's tagged rows go (default: stdout).")
    tag.add_argument("--batch-size", type=POSITIVE_INT, default=32, metavar="N",
                     help="Sentences per forward pass (default 32).")
    tag.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="Device (default auto).")
    tag.set_defaults(func=cmd_tag)

    plot = commands.add_parser(
        "plot", help="Plot runs' loss, perplexity, LR, throughput and telemetry into one PNG (needs matplotlib).",
        description="One PNG of runs' metrics.jsonl: a panel per metric, every run and split (train, val, "
                    "val:new, val:original, system) overlaid and labelled, recovery and early-stop events marked.")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Run directories (their metrics.jsonl).")
    plot.add_argument("--output", metavar="FILE.png", help="Where to write the PNG (default RUN_DIR/plot.png of the first run).")
    plot.add_argument("--metrics", metavar="M,M,...", help="Comma-separated metrics, one panel each (default "
                      "loss,ppl,lr,tokens_per_s,rss_mb,data_wait_frac; any metrics.jsonl field works, e.g. grad_norm, "
                      "cpu_pct, rewards/margins).")
    plot.add_argument("--x", choices=["step", "tokens"], default="step", help="x axis: optimizer step or tokens seen "
                      "(default step).")
    plot.set_defaults(func=cmd_plot)
    add_underscore_spellings(parser)
    return parser


def print_commands(parser: argparse.ArgumentParser) -> None:
    """What bare `temper` prints: every command and what it does."""
    from tempering.tracking.console import print_table

    rows = [[f"temper {command}", summary] for command, summary in command_summaries(parser)]
    print_table(f"temper {__version__}: train a model through its whole life from one YAML config",
                ["command", "what it does"], rows, left_columns=2)
    print("Run `temper COMMAND --help` (or `temper help COMMAND`) for a command's options.")


CHECKPOINT_HELP = ("A checkpoint dir, or a run dir (its best/, else final/, else the newest checkpoints/step-*).")


PRETRAIN_FLAGS = TRAINING_FLAGS + [TRAIN_ONLY_FLAG, *EXPERT_FLAGS, TASK_FLAG, OBJECTIVE_FLAG,
                                   Flag("--lm", "vision.lm", str, "CHECKPOINT"), ASR_CHECKPOINT_FLAG]
SUBMIT_FLAGS = [Flag("--save-dir", "run.save_dir", str, "DIR")]


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", action="extend", metavar="PATH",
                        help="Training data: shard dirs from `temper prep`, or raw files/dirs/globs (repeatable) [data.datasets].")
    parser.add_argument("--val-data", nargs="+", action="extend", metavar="PATH",
                        help="Separate validation data; shard dirs contribute their val split when they have one [data.val_data].")
    _add_restart(parser)
    _add_config_arguments(parser, PRETRAIN_FLAGS)


def _add_restart(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="Start over: move an existing run in --save-dir aside (never deleted) instead of resuming it.")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `temper` command."""
    bound_onednn_cache()  # before any torch kernel runs: oneDNN reads it when it first builds a primitive
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv == ["help"]:
        print_commands(parser)
        return
    if argv[0] == "help":  # `temper help prep` is `temper prep --help`
        argv = [*argv[1:], "--help"]
    unknown_flag = first_unknown_flag(parser, argv)
    if unknown_flag:  # before argparse's own errors: a misspelt flag is the likelier mistake
        parser.exit(EXIT_USER_ERROR, f"error: {unknown_flag_message(command_parser(parser, argv), unknown_flag)}\n")
    # argparse takes one run of positionals; overrides may also follow later flags.
    args, extra = parser.parse_known_args(argv)
    late_overrides = [item for item in extra if OVERRIDE_PATTERN.match(item)]
    unknown = [item for item in extra if not OVERRIDE_PATTERN.match(item)]
    if unknown or (late_overrides and not hasattr(args, "overrides")):
        args._parser.error(f"unexpected arguments: {' '.join(unknown or late_overrides)}")
    if late_overrides:
        args.overrides = list(args.overrides or []) + late_overrides
    try:
        pin_mmap_threshold()
        args.func(args)
        _leave_process_group()
    except BrokenPipeError:  # `temper config schema | head`: the reader left, not an error
        sys.stderr.close()
        sys.exit(0)
    except (Exception, KeyboardInterrupt) as exc:
        sys.exit(report_failure(exc))


def _leave_process_group() -> None:
    """End a torchrun / srun process group cleanly once the command is done."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def report_failure(exc: BaseException) -> int:
    """The last-resort handler: undo a failed start, print one line, return the exit status.

    A user error or an environment failure (full disk, file-size limit, permissions) is one
    line and status 2; an interrupt is 130; anything else is a bug: one line naming the file
    that holds the full traceback, status 1. Never a stack trace on the console.
    """
    from rich.text import Text

    from tempering.errors import (
        EXIT_BUG,
        EXIT_INTERRUPTED,
        EXIT_PREEMPTED,
        describe_environment_error,
        environment_error,
        write_crash_report,
    )
    from tempering.tracking.console import console
    from tempering.training.run_dir import abandon_unstarted_runs, last_opened_run_dir
    from tempering.training.stop_signals import Preempted

    abandon_unstarted_runs()
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, Preempted):
        console.print(str(exc), soft_wrap=True)
        return EXIT_PREEMPTED
    if isinstance(exc, UserError):
        message, status = str(exc), EXIT_USER_ERROR
    elif environment_error(exc) is not None:
        message, status = describe_environment_error(environment_error(exc)), EXIT_USER_ERROR
    else:
        report = write_crash_report(exc, last_opened_run_dir())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        message = (f"unexpected {type(exc).__name__}: {first} — a bug in temper; please report it with the full "
                   f"traceback in {report}")
        status = EXIT_BUG
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return status

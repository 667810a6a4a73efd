"""Captioning runs: train a vision preset with a decoder LM (`pretrain --lm`), or continue a vision checkpoint (`post-train`).

Assembly only, like every stage: where the model comes from, the caption data, then the
shared loop with the `caption` objective — so resume, NaN rollback, best/final, the reset
flags, freezing, `lr_groups`, layer-wise decay and LoRA behave as for the decoder.

The LM is embedded, not referenced. A vision checkpoint holds the encoder, the projector
and a copy of the language model (LLaVA's layout: `LlavaForConditionalGeneration` loads the
directory as it is). Referencing a frozen LM by path and fingerprint would save disk (the
LM's size per checkpoint), but then a checkpoint would not be self-contained: copying it to
another machine, or deleting or retraining the LM run, would break every later load;
transformers could not load it; and a run that trains the LM (`vision.train_lm`, `lr_groups`,
LoRA) could not be represented at all. The `--lm` checkpoint is read once, at the start of a
run: its path and a fingerprint of its weights are recorded in `meta.json` (`lm_source`) as
provenance, and a run that resumes finds the LM in its own checkpoints, so moving or deleting
the LM afterwards costs nothing; only a fresh start whose `--lm` is missing is an error.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import Checkpoint, load_checkpoint
from tempering.checkpoint.manager import CheckpointManager
from tempering.checkpoint.model_loading import load_checkpoint_tokenizer
from tempering.checkpoint.paths import TOKENIZER_FILES, WEIGHTS_FILE
from tempering.checkpoint.resolution import record_run, validate_source_checkpoint
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.models.llama import LLAMA
from tempering.models.registry import find_preset
from tempering.models.vision.architecture import OVERRIDE_KEYS, VisionArchitecture
from tempering.models.vision.model import lm_weights_for_captioner
from tempering.tokenizer import TokenizerBundle
from tempering.tokenizer.special import RESERVED_TOKENS
from tempering.tracking.console import console
from tempering.training.assembly import ModelSource, assemble, source_from_checkpoint
from tempering.training.caption_data import build_caption_data
from tempering.training.captioning import Captioning
from tempering.training.device import pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, TrainState, train
from tempering.training.post_train import carry_over_state, check_reset_step, report_learning_rate
from tempering.training.run_dir import prepare_run_dir

TASK = "captioning"
LM_PATTERNS = ("model.language_model", "lm_head")  # what vision.train_lm=false freezes
IMAGE_TOKEN = RESERVED_TOKENS[0]  # the id LLaVA's config names for image positions (never in a caption)


def trains_captions(family) -> bool:
    """Whether a family's run is a captioning run (the vision family's task)."""
    return TASK in getattr(family, "tasks", ())


def run_captioning(config: Config, *, source: Checkpoint | None = None, restart: bool = False) -> dict:
    """Train config.model's vision preset on config.vision.lm (source None), or continue the vision checkpoint `source`."""
    _check_packages()
    config = _with_lm_frozen(config)
    model_source, tokenizer, lm_meta = _start(config, source)
    arch: VisionArchitecture = model_source.arch
    max_text = min(config.data.seq_len, arch.lm.max_seq_len - arch.num_patches)
    prompt_tokens = len(tokenizer.encode(config.vision.prompt)) if config.vision.prompt else 0
    if prompt_tokens + 2 > max_text:
        raise UserError(f"vision.prompt takes {prompt_tokens} tokens, leaving no room for a caption in "
                        f"{max_text} text positions (data.seq_len, or the LM's context after "
                        f"{arch.num_patches} image positions)")
    data = build_caption_data(config, tokenizer, image_size=arch.image_size, max_text_tokens=max_text,
                              source=source)
    if config.training.early_stopping_patience and not data.val_sets:
        raise UserError("training.early_stopping_patience needs validation images: give --val-data or "
                        "set --val-split above 0")
    if source is not None:
        if config.checkpoint.validate:
            validate_source_checkpoint(source.path, data_fingerprints=[])
        check_reset_step(config, source, restart)
        if config.lora.r is not None and not config.checkpoint.reset_optimizer:
            console.print("LoRA trains new adapters: the source's optimizer moments (of its full weights) are not used")
            config.checkpoint.reset_optimizer = True
    device = pick_device(config.training.device)
    objective = Captioning(tokenizer.decode, tokenizer.eos_id, best=config.training.best_metric)
    assembly = assemble(config, model_source, objective, device=device)
    initial_state, schedule_offset = TrainState(), 0
    if source is not None:
        initial_state, schedule_offset = carry_over_state(config, source, assembly.optimizer)
        report_learning_rate(config, source)
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)

    steps, length_reason = count_total_steps(config.training, data.train.batches_per_epoch,
                                             samples_per_batch=config.training.batch_size, tokens_per_batch=None)
    console.print(f"model: {model_source.preset or 'vision'} ({assembly.num_parameters() / 1e6:.2f}M parameters, "
                  f"{arch.num_patches} image positions of {arch.image_size}px) on {device}; "
                  f"{data.num_train_images:,} training images, {data.train.batches_per_epoch} batches per epoch; "
                  f"{steps} steps")
    hf_config, generation_config = assembly.checkpoint_configs(tokenizer, config)
    best_split = "val:original" if config.training.best_metric == "original" else "val:new"
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, train_batches=data.train, val_sets=data.val_sets,
        device=device, total_steps=initial_state.step + steps, length_reason=length_reason, hf_config=hf_config,
        generation_config=generation_config, tokenizer_dir=Path(tokenizer.path) if tokenizer.path else None,
        meta=_meta(config, source, tokenizer, lm_meta, assembly.checkpoint_meta()),
        best_split=best_split if best_split in data.val_sets else next(iter(data.val_sets), "val"),
        initial_state=initial_state, schedule_offset=schedule_offset)
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def _check_packages() -> None:
    """Pillow reads images and jiwer scores captions: both come with the vision extra."""
    for module in ("PIL", "jiwer"):
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"captioning needs the {module} package: pip install 'tempering[vision]'") from None


def _with_lm_frozen(config: Config) -> Config:
    """The config with the language model in training.freeze, unless vision.train_lm asks to train it."""
    if config.vision.train_lm:
        return config
    config = config.model_copy(deep=True)
    config.training.freeze = list(dict.fromkeys([*config.training.freeze, *LM_PATTERNS]))
    return config


def _start(config: Config, source: Checkpoint | None) -> tuple[ModelSource, TokenizerBundle, dict | None]:
    """The model source, tokenizer and LM provenance: a preset with --lm, or a vision checkpoint."""
    if source is not None:
        model_source = source_from_checkpoint(source, config.model)
        tokenizer = load_checkpoint_tokenizer(source, config.tokenizer.path)
        if source.meta.get("tokenizer_fingerprint") not in (None, tokenizer.fingerprint):
            raise UserError(f"tokenizer {tokenizer.path} (fingerprint {tokenizer.fingerprint}) is not the one "
                            f"{source.path} was trained with ({source.meta['tokenizer_fingerprint']})")
        return model_source, tokenizer, source.meta.get("lm_source")
    family, _ = find_preset(config.model.preset)
    overrides = {key: value for key in OVERRIDE_KEYS if (value := getattr(config.model, key)) is not None}
    set_elsewhere = sorted(key for key in config.model.model_fields_set
                           if key not in ("preset", "dropout", *overrides) and getattr(config.model, key) is not None)
    if set_elsewhere:
        raise UserError(f"model.{set_elsewhere[0]} does not apply to a vision preset: the language model's "
                        "dimensions come from the --lm checkpoint")
    encoder = family.architecture(config.model.preset, overrides)
    lm, weights, lm_meta = _language_model(config)
    tokenizer = load_checkpoint_tokenizer(lm, config.tokenizer.path or _lasting_tokenizer_dir(config, lm))
    image_token = tokenizer.tokenizer.token_to_id(IMAGE_TOKEN)
    arch = replace(encoder, lm=lm.architecture(), image_token_id=image_token if image_token is not None
                   else tokenizer.pad_id or 0)
    arch.check()
    return ModelSource(family, arch, preset=config.model.preset, initial_weights=weights), tokenizer, lm_meta


def _language_model(config: Config) -> tuple[Checkpoint, dict | None, dict]:
    """(LM checkpoint, its weights under the captioner's names, provenance); a resumed run reads its own checkpoint."""
    path = config.vision.lm
    if path is None:
        raise UserError(f"preset {config.model.preset} captions images with a decoder LM: give --lm CHECKPOINT "
                        "(a decoder checkpoint or run dir, e.g. from `temper pretrain`) [vision.lm]")
    resumable = None
    if config.run.save_dir is not None and Path(config.run.save_dir).is_dir():
        resumable = CheckpointManager(config.run.save_dir).latest_resumable()
    if resumable is not None:  # the run's own checkpoints embed the LM it started from
        own = load_checkpoint(resumable)
        if not Path(path).exists():
            console.print(f"--lm {path} no longer exists; the run resumes from {resumable}, which embeds the LM")
        return _lm_view(own), None, own.meta.get("lm_source") or {}
    try:
        lm = load_checkpoint(path)
    except UserError as exc:
        raise UserError(f"--lm {path}: {exc}") from None
    if lm.family is not LLAMA:
        raise UserError(f"--lm {lm.path} holds a {lm.family.name} model; captions are written by a llama-family "
                        "decoder checkpoint (from `temper pretrain` or `temper import`)")
    return lm, lm_weights_for_captioner(lm.load_weights()), {"path": str(lm.path.resolve()), "fingerprint": _weights_fingerprint(lm.path),
                         "step": lm.meta.get("step")}


def _lasting_tokenizer_dir(config: Config, lm: Checkpoint) -> str | None:
    """A copy in save_dir/tokenizer of the tokenizer of an LM read from the run's own checkpoint, else None.

    A resumed run reads its LM from its newest checkpoint, which retention (save_total_limit)
    may delete before the run copies the tokenizer into its next checkpoint.
    """
    save_dir = Path(config.run.save_dir) if config.run.save_dir is not None else None
    if save_dir is None or lm.tokenizer_dir is None or not lm.path.resolve().is_relative_to(save_dir.resolve()):
        return None
    kept = save_dir / "tokenizer"
    if not (kept / TOKENIZER_FILES[0]).is_file():
        staging = save_dir / ".tmp-tokenizer"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in TOKENIZER_FILES:
            if (lm.path / name).is_file():
                shutil.copy2(lm.path / name, staging / name)
        staging.replace(kept)
    return str(kept)


def _lm_view(checkpoint: Checkpoint) -> Checkpoint:
    """A vision checkpoint seen as its language model: the text config, same tokenizer files."""
    return Checkpoint(path=checkpoint.path, hf_config=checkpoint.hf_config["text_config"],
                      meta={**checkpoint.meta, "family": LLAMA.name})


def _weights_fingerprint(checkpoint_dir: Path) -> str:
    """sha256 (first 16 hex digits) of a checkpoint's model.safetensors: which LM a vision run started from."""
    digest = hashlib.sha256()
    with open(checkpoint_dir / WEIGHTS_FILE, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _meta(config: Config, source: Checkpoint | None, tokenizer: TokenizerBundle, lm_meta: dict | None,
          model_meta: dict) -> dict:
    """Checkpoint meta.json of a captioning run."""
    meta = {"tokenizer_fingerprint": tokenizer.fingerprint, "task": TASK, "lm_source": lm_meta,
            "prompt": config.vision.prompt, "seq_len": config.data.seq_len,
            "source_checkpoint": str(source.path) if source is not None else None,
            "post_training": source is not None, **model_meta}
    if source is not None:
        meta.update(strategy=config.data.strategy,
                    reset={name: getattr(config.checkpoint, f"reset_{name}") for name in ("optimizer", "scheduler",
                                                                                           "step")})
    return meta

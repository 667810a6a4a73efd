"""Speech stages: `temper pretrain` and `temper post-train` when the model is a speech family (ASR, Talker).

The stage entry points dispatch here when the preset (pretrain) or the checkpoint (post-train)
belongs to a speech family, so the user runs the same commands with the same flags. Only the
data (speech CSVs → log-mel batches) and the objective differ; assembly (freezing, LR groups,
LoRA), the loop (NaN rollback, resume, best/ by WER) and the post-training state carry-over
(`--reset-*`) are the ones every stage uses.
"""

from __future__ import annotations

from pathlib import Path

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import Checkpoint
from tempering.checkpoint.model_loading import load_checkpoint_tokenizer
from tempering.checkpoint.resolution import record_run
from tempering.config import load_config
from tempering.config.schema import Config
from tempering.data.audio.asr_data import SpeechData, build_asr_data, build_asr_validation
from tempering.data.audio.tts_data import build_tts_data, build_tts_validation
from tempering.errors import UserError
from tempering.evaluation.intelligibility import Intelligibility
from tempering.generation.transcribe import load_asr_model
from tempering.models.registry import find_preset
from tempering.tokenizer import TokenizerBundle, load_tokenizer
from tempering.tokenizer.characters import build_character_tokenizer, character_set
from tempering.tracking.console import console
from tempering.training.assembly import (
    NON_ARCHITECTURE_KEYS,
    ModelSource,
    assemble,
    source_from_checkpoint,
)
from tempering.training.ctc import Ctc, alignment_possible
from tempering.training.device import pick_device
from tempering.training.length import count_total_steps
from tempering.training.loop import TrainingSetup, train
from tempering.training.objective import Objective
from tempering.training.post_train import carry_over_state, check_reset_step, report_learning_rate
from tempering.training.run_dir import prepare_run_dir
from tempering.training.speech_alignment import asr_aligner
from tempering.training.tts import Tts


def asr_objective(tokenizer: TokenizerBundle, arch) -> Ctc:
    """CTC over the model's classes, its greedy transcripts decoded by the run's tokenizer."""
    return Ctc(arch.blank_id, lambda ids: tokenizer.decode(ids, skip_special_tokens=True))


def speech_tokenizer(config: Config) -> TokenizerBundle:
    """tokenizer.path when given (the model spells pieces), else one class per character of speech.alphabet."""
    if config.tokenizer.path is not None:
        return load_tokenizer(config.tokenizer.path)
    return build_character_tokenizer(config.speech.alphabet)


def run_speech_pretrain(config: Config, *, restart: bool = False) -> dict:
    """Train a speech model from its preset on speech CSVs (or resume the run in run.save_dir)."""
    family, _ = find_preset(config.model.preset)
    task = SpeechTask(config, family.name)
    overrides = {key: value for key, value in config.model.model_dump(exclude=NON_ARCHITECTURE_KEYS).items()
                 if value is not None}
    overrides.update(task.dimensions())
    source = ModelSource(family, family.architecture(config.model.preset, overrides), preset=config.model.preset)
    data = task.data()
    device = pick_device(config.training.device)
    assembly = assemble(config, source, task.objective(source.arch), device=device)
    total_steps, length_reason = _total_steps(config, data)
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)
    tokenizer = task.tokenizer
    tokenizer_dir = tokenizer.save(run_dir / "tokenizer", overwrite=True)
    console.print(f"model: {config.model.preset} ({assembly.num_parameters() / 1e6:.2f}M parameters, "
                  f"{family.name} family) on {device}; {total_steps} steps of "
                  f"{config.training.batch_size * config.training.accumulation_steps} utterances")
    hf_config, _ = assembly.checkpoint_configs(tokenizer, config)
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, train_batches=data.train_batches,
        val_sets=data.val_sets, device=device, total_steps=total_steps, length_reason=length_reason,
        hf_config=hf_config, tokenizer_dir=Path(tokenizer_dir),
        meta={"tokenizer_fingerprint": tokenizer.fingerprint, "source_checkpoint": None, "post_training": False,
              **task.meta(), **assembly.checkpoint_meta()})
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


class SpeechTask:
    """What differs between the speech families: tokenizer, data, objective (ASR: CTC; Talker: TTS)."""

    def __init__(self, config: Config, family: str, tokenizer: TokenizerBundle | None = None):
        self.config, self.family = config, family
        self.asr = _load_asr(config) if family == "talker" else None
        if tokenizer is None:
            tokenizer = self.asr.tokenizer if self.asr else speech_tokenizer(config)
        if tokenizer.pad_id is None:
            raise UserError(f"tokenizer {tokenizer.path} has no pad token, which the CTC blank needs")
        self.tokenizer = tokenizer

    def dimensions(self) -> dict:
        """Architecture keys that follow the tokenizer."""
        if self.family == "talker":
            return {"vocab_size": self.tokenizer.vocab_size, "pad_id": self.tokenizer.pad_id}
        return {"vocab_size": self.tokenizer.vocab_size, "blank_id": self.tokenizer.pad_id}

    def data(self, datasets: list | None = None, val_data: list | None = None, val_name: str = "val",
             config: Config | None = None) -> SpeechData:
        """Training and validation batches of `datasets` (default: the data of `config`, default the run's)."""
        config = config or self.config
        if self.family == "talker":
            return build_tts_data(config, self.tokenizer, self.alphabet(), self.aligner(), datasets=datasets,
                                  val_data=val_data, val_name=val_name)
        return build_asr_data(config, self.tokenizer, alignment_possible, datasets=datasets, val_data=val_data,
                              val_name=val_name)

    def alphabet(self) -> str:
        """The characters the model's tokenizer spells (the Talker's input)."""
        return character_set(self.tokenizer)

    def aligner(self):
        """The Talker's durations: forced alignment by its ASR checkpoint."""
        return asr_aligner(self.asr)

    def validation(self, config: Config, datasets: list, val_data: list) -> list | None:
        """Only the validation set of another config's data (the original data of a post-training run)."""
        if self.family == "talker":
            return build_tts_validation(config, self.tokenizer, self.alphabet(), self.aligner(), datasets,
                                        val_data)[0]
        return build_asr_validation(config, self.tokenizer, datasets, val_data)

    def objective(self, arch) -> Objective:
        """CTC for the audio encoder; TTS (with intelligibility by the ASR) for the Talker."""
        if self.family == "talker":
            return Tts(lambda: Intelligibility(self.asr))
        return asr_objective(self.tokenizer, arch)

    def meta(self) -> dict:
        """Checkpoint meta the task adds (the Talker's ASR checkpoint)."""
        return {"asr_checkpoint": str(self.asr.checkpoint.path)} if self.asr else {}


def _load_asr(config: Config):
    """The ASR checkpoint a Talker run aligns with and is judged by (speech.asr_checkpoint)."""
    if config.speech.asr_checkpoint is None:
        raise UserError("the Talker learns each character's duration from an ASR checkpoint's CTC alignments: "
                        "give --asr-checkpoint PATH (an audio_encoder checkpoint or run dir)")
    return load_asr_model(config.speech.asr_checkpoint)


def run_speech_post_train(config: Config, source: Checkpoint, *, restart: bool = False) -> dict:
    """Continue a speech checkpoint on new speech CSVs, with val:new and (when known) val:original."""
    model_source = source_from_checkpoint(source, config.model)
    tokenizer = load_checkpoint_tokenizer(source, config.tokenizer.path)
    if source.meta.get("tokenizer_fingerprint") not in (None, tokenizer.fingerprint):
        raise UserError(f"tokenizer {tokenizer.path} is not the one {source.path} was trained with")
    task = SpeechTask(config, source.family.name, tokenizer)
    data = _post_train_data(config, task, source)
    check_reset_step(config, source, restart)
    if config.lora.r is not None and not config.checkpoint.reset_optimizer:
        config.checkpoint.reset_optimizer = True
    device = pick_device(config.training.device)
    assembly = assemble(config, model_source, task.objective(model_source.arch), device=device)
    initial_state, schedule_offset = carry_over_state(config, source, assembly.optimizer)
    report_learning_rate(config, source)
    new_steps, length_reason = _total_steps(config, data)
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)
    hf_config, _ = assembly.checkpoint_configs(tokenizer, config)
    resets = {name: getattr(config.checkpoint, f"reset_{name}") for name in ("optimizer", "scheduler", "step")}
    best_split = f"val:{config.training.best_metric}"
    setup = TrainingSetup(
        config=config, run_dir=run_dir, assembly=assembly, train_batches=data.train_batches,
        val_sets=data.val_sets, device=device, total_steps=initial_state.step + new_steps,
        length_reason=length_reason, hf_config=hf_config, tokenizer_dir=source.tokenizer_dir,
        meta={"tokenizer_fingerprint": tokenizer.fingerprint, "source_checkpoint": str(source.path),
              "post_training": True, "strategy": config.data.strategy, "reset": resets,
              **task.meta(), **assembly.checkpoint_meta()},
        best_split=best_split if best_split in data.val_sets else next(iter(data.val_sets), "val:new"),
        initial_state=initial_state, schedule_offset=schedule_offset)
    summary = train(setup)
    record_run(config, run_dir, summary)
    return summary


def _post_train_data(config: Config, task: SpeechTask, source: Checkpoint) -> SpeechData:
    """New (and, for `combined`, old) training rows; val:new, and val:original from the old data or source run."""
    strategy, old = config.data.strategy, config.data.old_datasets
    if strategy == "append":
        raise UserError("data.strategy append is for token data; for speech use combined (old and new rows "
                        "shuffled together) or new_only")
    if strategy == "combined" and not old:
        raise UserError("data.strategy combined trains on old and new data: give the original CSV with "
                        "--old-dataset PATH")
    datasets = [*config.data.datasets, *(old if strategy == "combined" else [])]
    data = task.data(datasets, val_name="val:new")
    original = _original_validation(config, task, source)
    if original:
        data.val_sets["val:original"] = original
    else:
        console.print("no original validation data found (give --old-dataset): only val:new is watched")
    return data


def _original_validation(config: Config, task: SpeechTask, source: Checkpoint) -> list | None:
    """The validation set of the original data: --old-dataset's, else the source run's config.yaml's."""
    if config.data.old_datasets:
        return task.validation(config, config.data.old_datasets, [])
    for run_dir in (source.path.parent, source.path.parent.parent):
        frozen = run_dir / "config.yaml"
        if frozen.is_file() and (run_dir / "metrics.jsonl").exists():
            try:
                original = load_config(frozen)
                return task.validation(original, original.data.datasets, original.data.val_data)
            except UserError as exc:
                console.print(f"cannot rebuild the original validation set from {frozen}: {exc}")
                return None
    return None


def _total_steps(config: Config, data: SpeechData) -> tuple[int, str]:
    if config.training.num_training_tokens is not None:
        raise UserError("training.num_training_tokens does not apply to speech; give --max-steps or --epochs")
    if config.training.early_stopping_patience and not data.val_sets:
        raise UserError("training.early_stopping_patience needs validation data: set --val-split above 0 "
                        "or give --val-data")
    return count_total_steps(config.training, data.train_batches.batches_per_epoch,
                             samples_per_batch=config.training.batch_size, tokens_per_batch=None)

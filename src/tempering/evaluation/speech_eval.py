"""`temper eval` on a speech checkpoint over every row of speech CSVs: ASR (CTC loss, WER, CER) or Talker (mel loss, intelligibility)."""

from __future__ import annotations

from tempering.checkpoint.model_loading import load_model
from tempering.config.schema import Config, DatasetConfig
from tempering.data.audio.asr_data import build_asr_validation
from tempering.data.audio.tts_data import build_tts_validation
from tempering.data.datasets import dataset_name
from tempering.errors import UserError
from tempering.training.device import pick_device
from tempering.training.speech import SpeechTask, asr_objective
from tempering.training.validation import evaluate


def evaluate_speech_checkpoint(path: str, datasets: list[DatasetConfig], *, batch_size: int,
                               max_batches: int | None, device: str, asr_checkpoint: str | None = None) -> dict:
    """{"checkpoint", "step", "datasets": {name: {path, utterances, loss, ...}}} of a speech checkpoint.

    ASR checkpoints report loss, wer and cer. Talker checkpoints report the per-frame loss, mel_l1,
    duration_loss and the intelligibility (CER and WER of `asr_checkpoint`, default the ASR the
    Talker trained with, on its Griffin-Lim audio); `dropped` counts rows the ASR could not align.
    """
    torch_device = pick_device(device)
    loaded = load_model(path, device=torch_device)
    config = Config()
    config.data.val_split = 0.0
    talker = loaded.family.name == "talker"
    if talker:
        config.speech.asr_checkpoint = asr_checkpoint or loaded.checkpoint.meta.get("asr_checkpoint")
        if config.speech.asr_checkpoint is None:
            raise UserError(f"{path} does not name the ASR checkpoint it trained with: give --asr-checkpoint PATH")
        task = SpeechTask(config, "talker", loaded.tokenizer)
        objective = task.objective(loaded.arch)
    else:
        objective = asr_objective(loaded.tokenizer, loaded.arch)
    results = {}
    for dataset in datasets:
        dropped = 0
        if talker:
            sets, dropped = build_tts_validation(config, task.tokenizer, task.alphabet(), task.aligner(), [],
                                                 [dataset])
        else:
            sets = build_asr_validation(config, loaded.tokenizer, [], [dataset])
        if not sets:
            raise UserError(f"{dataset.path}: no utterance to evaluate (every row was empty or could not be aligned)")
        values = evaluate(loaded.model, sets, objective, batch_size=batch_size, device=torch_device,
                          max_batches=max_batches)
        results[dataset_name(dataset)] = {"path": dataset.path, "utterances": sum(len(s) for s in sets),
                                          **({"dropped": dropped} if talker else {}),
                                          **{k: v for k, v in values.items() if k != objective.unit}}
    return {"checkpoint": str(loaded.checkpoint.path), "step": loaded.checkpoint.step,
            "family": loaded.family.name, "datasets": results}

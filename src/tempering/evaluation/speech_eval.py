"""`temper eval` on a speech checkpoint: CTC loss, WER and CER over every row of speech CSVs."""

from __future__ import annotations

from tempering.checkpoint.model_loading import load_model
from tempering.config.schema import Config, DatasetConfig
from tempering.data.audio.asr_data import build_asr_validation
from tempering.data.datasets import dataset_name
from tempering.training.device import pick_device
from tempering.training.speech import asr_objective
from tempering.training.validation import evaluate


def evaluate_speech_checkpoint(path: str, datasets: list[DatasetConfig], *, batch_size: int,
                               max_batches: int | None, device: str) -> dict:
    """{"checkpoint", "step", "datasets": {name: {path, utterances, loss, wer, cer}}} of an ASR checkpoint."""
    torch_device = pick_device(device)
    loaded = load_model(path, device=torch_device)
    config = Config()
    config.data.val_split = 0.0
    objective = asr_objective(loaded.tokenizer, loaded.arch)
    results = {}
    for dataset in datasets:
        sets = build_asr_validation(config, loaded.tokenizer, [], [dataset]) or []
        values = evaluate(loaded.model, sets, objective, batch_size=batch_size, device=torch_device,
                          max_batches=max_batches)
        results[dataset_name(dataset)] = {"path": dataset.path, "utterances": sum(len(s) for s in sets),
                                          **{k: v for k, v in values.items() if k != objective.unit}}
    return {"checkpoint": str(loaded.checkpoint.path), "step": loaded.checkpoint.step, "datasets": results}

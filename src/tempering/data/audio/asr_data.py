"""ASR training and validation data from speech CSVs: normalised transcripts, target ids, log-mel features.

Rows go to validation by (in order) `data.val_data` CSVs, a `split` column, or a seeded
`data.val_split` of the rows. Transcripts are normalised to the alphabet (see `text.py`) and
are both the CTC targets and the WER/CER references. A training utterance whose features are
too short for its transcript (the model's `feasible` test) is dropped and counted: CTC would
have no alignment for it. Validation keeps it (the objective leaves it out of the loss, but its
transcript still counts in WER and CER), so the error rates are over the whole split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tempering.config.schema import Config
from tempering.data.audio.batches import AsrCollate, SpecAugment, UtteranceBatches
from tempering.data.audio.text import normalize_transcript
from tempering.data.audio.utterances import Utterance, compute_features, read_speech_csv
from tempering.data.packing import split_documents
from tempering.errors import UserError
from tempering.tracking.console import console


@dataclass
class SpeechData:
    """Training batches and validation sets of one speech stage, and how many utterances were dropped."""

    train_batches: UtteranceBatches
    val_sets: dict[str, list[UtteranceBatches]]
    num_dropped: int


def split_utterances(config: Config, datasets: list, val_data: list) -> tuple[list[Utterance], list[Utterance]]:
    """(train, val) rows of the given CSV datasets: val_data, else the split column, else a seeded val_split."""
    rows = [u for dataset in datasets for u in _limited(read_speech_csv(dataset.path), dataset.limit)]
    if val_data:
        return rows, [u for dataset in val_data for u in _limited(read_speech_csv(dataset.path), dataset.limit)]
    if any(u.split is not None for u in rows):
        return [u for u in rows if u.split != "val"], [u for u in rows if u.split == "val"]
    train_mask, val_mask = split_documents(np.arange(len(rows)), config.data.val_split, config.run.seed)
    return [u for u, keep in zip(rows, train_mask, strict=True) if keep], \
        [u for u, keep in zip(rows, val_mask, strict=True) if keep]


def _limited(rows: list[Utterance], limit: int | None) -> list[Utterance]:
    return rows if limit is None else rows[:limit]


def build_asr_data(config: Config, tokenizer, feasible: Callable[[int, np.ndarray], bool], *,
                   datasets: list | None = None, val_data: list | None = None, val_name: str = "val") -> SpeechData:
    """Augmented training batches and plain validation batches for CTC, from config.data (or the given datasets)."""
    datasets = config.data.datasets if datasets is None else datasets
    if not datasets:
        raise UserError("no training data: give --data FILE.csv (from `temper prep --format audio_asr`)")
    val_data = config.data.val_data if val_data is None else val_data
    train_rows, val_rows = split_utterances(config, datasets, val_data)
    alphabet = config.speech.alphabet
    speech = config.speech
    augment = SpecAugment(speech.freq_masks, speech.freq_mask_bins, speech.time_masks, speech.time_mask_frames)
    train, dropped = _asr_set(train_rows, tokenizer, alphabet, feasible, augment, config, shuffle=True)
    if len(train.lengths) == 0:
        raise UserError("no training utterance is usable: every transcript is empty or longer than its audio allows")
    val_sets = {}
    if val_rows:
        val, val_dropped = _asr_set(val_rows, tokenizer, alphabet, _has_target, None, config, shuffle=False)
        dropped += val_dropped
        if len(val.lengths):
            val_sets[val_name] = [val]
    if dropped:
        console.print(f"dropped {dropped} utterance(s) with an empty transcript or too little audio for it")
    console.print(f"speech data: {len(train.lengths)} training utterances"
                  + (f", {len(val_sets[val_name][0].lengths)} validation" if val_sets else ", no validation"))
    return SpeechData(train, val_sets, dropped)


def build_asr_validation(config: Config, tokenizer, datasets: list, val_data: list) -> list[UtteranceBatches] | None:
    """Only the validation set the given datasets make (no training features computed), or None."""
    _, val_rows = split_utterances(config, datasets, val_data)
    if not val_rows:
        return None
    val, _ = _asr_set(val_rows, tokenizer, config.speech.alphabet, _has_target, None, config, shuffle=False)
    return [val] if len(val.lengths) else None


def _has_target(num_frames: int, target: np.ndarray) -> bool:
    """Validation keeps every utterance with a transcript: one too short to align still counts in WER and CER."""
    return len(target) > 0


def _asr_set(rows: list[Utterance], tokenizer, alphabet: str, feasible, augment: SpecAugment | None,
             config: Config, *, shuffle: bool) -> tuple[UtteranceBatches, int]:
    transcripts = [normalize_transcript(u.transcript, alphabet) for u in rows]
    targets = [np.asarray(tokenizer.encode(t), np.int64) for t in transcripts]
    features = compute_features(rows, normalize=True)
    keep = [i for i in range(len(rows)) if feasible(len(features[i]), targets[i])]
    collate = AsrCollate([features[i] for i in keep], [targets[i] for i in keep], [transcripts[i] for i in keep],
                         augment=augment, seed=config.run.seed)
    lengths = np.array([len(features[i]) for i in keep], np.int64)
    batches = UtteranceBatches(lengths, collate, batch_size=config.training.batch_size, seed=config.run.seed,
                               shuffle=shuffle)
    return batches, len(rows) - len(keep)


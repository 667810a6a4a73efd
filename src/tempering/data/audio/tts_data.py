"""Talker training and validation data from speech CSVs: characters, their durations, absolute log-mel targets.

The Talker reads the same CSVs as ASR (`temper prep --format audio_tts` or `audio_asr`). Its
input is the transcript normalised to the ASR checkpoint's alphabet, one id per character; its
target is the utterance's absolute log-mel. Each character's duration in mel frames comes from
`align` — the ASR checkpoint's CTC forced alignment, given by the caller — and the durations of
an utterance sum to its frames. An utterance the ASR cannot align is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tempering.config.schema import Config
from tempering.data.audio.asr_data import SpeechData, split_utterances
from tempering.data.audio.batches import TtsCollate, UtteranceBatches
from tempering.data.audio.features import normalize_utterance
from tempering.data.audio.text import normalize_transcript
from tempering.data.audio.utterances import Utterance, compute_features
from tempering.errors import UserError
from tempering.tracking.console import console

# (normalised log-mel (T, 80), character ids (S,)) -> (S,) frames per character summing to T, or None
Aligner = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]


def build_tts_data(config: Config, tokenizer, alphabet: str, align: Aligner, *, datasets: list | None = None,
                   val_data: list | None = None, val_name: str = "val") -> SpeechData:
    """Training and validation batches for the Talker, from config.data (or the given datasets)."""
    datasets = config.data.datasets if datasets is None else datasets
    if not datasets:
        raise UserError("no training data: give --data FILE.csv (from `temper prep --format audio_tts`)")
    train_rows, val_rows = split_utterances(config, datasets, config.data.val_data if val_data is None else val_data)
    train, dropped = _tts_set(train_rows, tokenizer, alphabet, align, config, shuffle=True)
    if len(train.lengths) == 0:
        raise UserError("no training utterance could be aligned by the ASR checkpoint (speech.asr_checkpoint)")
    val_sets = {}
    if val_rows:
        val, val_dropped = _tts_set(val_rows, tokenizer, alphabet, align, config, shuffle=False)
        dropped += val_dropped
        if len(val.lengths):
            val_sets[val_name] = [val]
    if dropped:
        console.print(f"dropped {dropped} utterance(s) the ASR checkpoint could not align to their transcript")
    console.print(f"speech data: {len(train.lengths)} training utterances"
                  + (f", {len(val_sets[val_name][0].lengths)} validation" if val_sets else ", no validation"))
    return SpeechData(train, val_sets, dropped)


def build_tts_validation(config: Config, tokenizer, alphabet: str, align: Aligner, datasets: list,
                         val_data: list) -> tuple[list[UtteranceBatches] | None, int]:
    """Only the validation set the given datasets make (no training rows aligned), and how many were dropped."""
    _, val_rows = split_utterances(config, datasets, val_data)
    if not val_rows:
        return None, 0
    val, dropped = _tts_set(val_rows, tokenizer, alphabet, align, config, shuffle=False)
    return ([val] if len(val.lengths) else None), dropped


def _tts_set(rows: list[Utterance], tokenizer, alphabet: str, align: Aligner, config: Config, *,
             shuffle: bool) -> tuple[UtteranceBatches, int]:
    transcripts = [normalize_transcript(u.transcript, alphabet) for u in rows]
    tokens = [np.asarray(tokenizer.encode(t), np.int64) for t in transcripts]
    mels = compute_features(rows, normalize=False)
    durations = [align(normalize_utterance(m.astype(np.float32)), t) if len(t) else None
                 for m, t in zip(mels, tokens, strict=True)]
    keep = [i for i, d in enumerate(durations) if d is not None]
    collate = TtsCollate([tokens[i] for i in keep], [durations[i] for i in keep], [mels[i] for i in keep],
                         [transcripts[i] for i in keep], pad_id=tokenizer.pad_id)
    lengths = np.array([len(mels[i]) for i in keep], np.int64)
    batches = UtteranceBatches(lengths, collate, batch_size=config.training.batch_size, seed=config.run.seed,
                               shuffle=shuffle)
    return batches, len(rows) - len(keep)

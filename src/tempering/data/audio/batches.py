"""Batches of utterances, addressable by a global micro-batch index, with similar lengths side by side.

Micro-batch g is batch (g mod per_epoch) of epoch (g div per_epoch), and everything about an
epoch — its order, which utterances share a batch, each utterance's SpecAugment masks — is a
pure function of (seed, epoch), so resuming needs only g. An epoch shuffles the utterances,
sorts each window of 32 batches' worth by length (less padding), cuts batches and shuffles
the batches; the last, smaller batch is kept, so every utterance trains once per epoch.
Validation batches go in length order, the same every time.

Collation pads to the longest utterance of the batch: ASR batches hold `features` (B, T, 80)
float32, `feature_lengths`, `targets` (B, S) and `target_lengths`; Talker batches hold
`tokens` (B, N), `token_lengths`, `durations` (B, N) in mel frames, `mels` (B, T, 80) and
`mel_lengths`. Both carry
`reference` (B, R) int32 Unicode code points of the transcript (0-padded), what word and
character error rates compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tempering.data.audio.features import spec_augment

SORT_WINDOW_BATCHES = 32
_MASK_STREAM = 0x5EC  # seed tag of the SpecAugment masks, apart from the order's seeds

Batch = dict[str, "np.ndarray | int"]


class UtteranceBatches:
    """Training micro-batches (`batch`) or validation batches (`eval_batches`) of utterances."""

    def __init__(self, lengths: np.ndarray, collate: Callable[[np.ndarray, int | None], Batch], *, batch_size: int,
                 seed: int, shuffle: bool = True):
        self.lengths = np.asarray(lengths, np.int64)
        self.collate = collate
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.batches_per_epoch = -(-len(self.lengths) // batch_size)
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The utterance indices of each batch of `epoch`, in order."""
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._plan(epoch))
        return self._epoch[1]

    def _plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        window = SORT_WINDOW_BATCHES * self.batch_size
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            order[start:start + window] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def batch(self, micro_batch: int) -> Batch:
        """Arrays of global micro-batch `micro_batch` (training: augmented as that epoch's seed says)."""
        epoch, index = divmod(micro_batch, self.batches_per_epoch)
        return self.collate(self.epoch_batches(epoch)[index], epoch)

    def eval_batches(self, batch_size: int):
        """Every utterance once, in length order, `batch_size` at a time, never augmented."""
        order = np.argsort(self.lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start:start + batch_size], None)


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment settings (speech.*); zero masks switch it off."""

    freq_masks: int
    freq_mask_bins: int
    time_masks: int
    time_mask_frames: int

    @property
    def active(self) -> bool:
        """Whether any mask is drawn."""
        return bool(self.freq_masks and self.freq_mask_bins) or bool(self.time_masks and self.time_mask_frames)


class AsrCollate:
    """Pad normalised features and target ids of chosen utterances; SpecAugment when an epoch is given."""

    def __init__(self, features: list[np.ndarray], targets: list[np.ndarray], transcripts: list[str], *,
                 augment: SpecAugment | None, seed: int):
        self.features, self.targets, self.transcripts = features, targets, transcripts
        self.augment, self.seed = augment, seed

    def __call__(self, indices: np.ndarray, epoch: int | None) -> Batch:
        features = [self._features(int(i), epoch) for i in indices]
        padded, lengths = pad_frames(features)
        targets, target_lengths = pad_ids([self.targets[i] for i in indices], 0)
        return {"features": padded, "feature_lengths": lengths, "targets": targets, "target_lengths": target_lengths,
                "reference": code_points([self.transcripts[i] for i in indices])}

    def _features(self, index: int, epoch: int | None) -> np.ndarray:
        features = self.features[index].astype(np.float32)
        if epoch is None or self.augment is None or not self.augment.active:
            return features
        rng = np.random.default_rng([self.seed, epoch, index, _MASK_STREAM])
        a = self.augment
        return spec_augment(features, rng, freq_masks=a.freq_masks, freq_mask_bins=a.freq_mask_bins,
                            time_masks=a.time_masks, time_mask_frames=a.time_mask_frames)


class TtsCollate:
    """Pad input token ids, their durations (in mel frames) and target log-mel frames of chosen utterances."""

    def __init__(self, tokens: list[np.ndarray], durations: list[np.ndarray], mels: list[np.ndarray],
                 transcripts: list[str], *, pad_id: int):
        self.tokens, self.durations, self.mels, self.transcripts = tokens, durations, mels, transcripts
        self.pad_id = pad_id

    def __call__(self, indices: np.ndarray, epoch: int | None) -> Batch:
        tokens, token_lengths = pad_ids([self.tokens[i] for i in indices], self.pad_id)
        durations, _ = pad_ids([self.durations[i] for i in indices], 0)
        mels, mel_lengths = pad_frames([self.mels[i].astype(np.float32) for i in indices])
        return {"tokens": tokens, "token_lengths": token_lengths, "durations": durations, "mels": mels,
                "mel_lengths": mel_lengths, "reference": code_points([self.transcripts[i] for i in indices])}


def pad_frames(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(B, T, bins) float32 zero-padded to the longest, and (B,) int64 lengths."""
    lengths = np.array([len(f) for f in frames], np.int64)
    padded = np.zeros((len(frames), int(lengths.max()), frames[0].shape[1]), np.float32)
    for row, f in enumerate(frames):
        padded[row, :len(f)] = f
    return padded, lengths


def pad_ids(sequences: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, S) int64 padded with `pad` (at least one column), and (B,) int64 lengths."""
    lengths = np.array([len(s) for s in sequences], np.int64)
    padded = np.full((len(sequences), max(int(lengths.max()), 1)), pad, np.int64)
    for row, s in enumerate(sequences):
        padded[row, :len(s)] = s
    return padded, lengths


def code_points(texts: list[str]) -> np.ndarray:
    """(B, R) int32 Unicode code points of each text, 0-padded: texts carried through tensor batches."""
    width = max((len(t) for t in texts), default=0) or 1
    points = np.zeros((len(texts), width), np.int32)
    for row, text in enumerate(texts):
        points[row, :len(text)] = [ord(c) for c in text]
    return points


def texts_from_code_points(points) -> list[str]:
    """The texts `code_points` packed (a numpy array or a CPU tensor)."""
    return ["".join(chr(c) for c in row if c) for row in np.asarray(points).tolist()]

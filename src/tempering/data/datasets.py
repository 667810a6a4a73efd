"""Open the datasets of a config as token sources and cut them into train/val windows.

A dataset is either a shard directory from `temper prep` (read with memmap, its
prep-time val split used for validation when present) or raw text files, tokenized
here once into memory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempering.config.schema import Config, DatasetConfig, PrepConfig
from tempering.data.packing import (
    PackedSequences,
    SequenceBatches,
    TokenReader,
    spans_of_documents,
    split_documents,
)
from tempering.errors import UserError
from tempering.tokenizer.bounded import encode_bounded
from tempering.tracking.console import console


@dataclass
class TokenSource:
    """One split of one dataset: a token reader and where its documents end."""

    name: str
    read: TokenReader
    document_ends: np.ndarray  # exclusive end (just past the EOS) of each document
    fingerprint: str | None = None  # the tokenizer that made the tokens (shards only)
    max_token_id: int | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens in this split."""
        return int(self.document_ends[-1]) if len(self.document_ends) else 0


@dataclass
class LmData:
    """Training batches and validation windows for a language-modelling stage."""

    train_batches: SequenceBatches
    val_sets: dict[str, list[PackedSequences]]
    train_sources: list[TokenSource]
    train_packed: list[PackedSequences]  # one per training dataset, for recombination (post-training)
    weights: list[float]


def dataset_name(dataset: DatasetConfig) -> str:
    """The dataset's display name: its `name`, else its path's stem."""
    return dataset.name or Path(dataset.path.rstrip("/")).name.split(".")[0] or dataset.path


def is_shard_dir(path: Path) -> bool:
    """True for a directory written by `temper prep`."""
    return path.is_dir() and (path / "manifest.json").exists()


def open_source(dataset: DatasetConfig, tokenizer, split: str = "train") -> TokenSource | None:
    """Open one split of a dataset; None when a shard dir has no such split."""
    path = Path(dataset.path)
    if is_shard_dir(path):
        from tempering.data.shards import TokenShards

        shards = TokenShards(path, split=split)
        if shards.num_tokens == 0:
            return None
        ends = shards.document_boundaries().astype(np.int64) + 1
        if dataset.limit is not None:
            ends = ends[:dataset.limit]
        return TokenSource(dataset_name(dataset), shards.read, ends, shards.fingerprint, shards.vocab_size - 1)
    if split != "train":
        return None
    return _tokenize_raw(dataset, tokenizer)


def _tokenize_raw(dataset: DatasetConfig, tokenizer) -> TokenSource:
    from tempering.data.cleaning import normalize_text
    from tempering.data.prep import raw_text_tokenizer
    from tempering.data.sources import SourceStats, discover_files, iter_documents

    files = discover_files([dataset.path])
    options = PrepConfig(text_field=dataset.text_field)
    texts = [t for t in (normalize_text(doc) for doc in iter_documents(files, options, SourceStats())) if t]
    if dataset.limit is not None:
        texts = texts[:dataset.limit]
    if not texts:
        raise UserError(f"{dataset.path}: no non-empty documents to train on")
    encoder = raw_text_tokenizer(copy.deepcopy(tokenizer.tokenizer))  # the same encoding as `temper prep`
    encoded, _ = encode_bounded(encoder, texts)
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), np.int64, len(encoded))
    tokens = np.empty(int(lengths.sum()), np.int32)
    ends = np.cumsum(lengths)
    for ids, end, length in zip(encoded, ends, lengths, strict=True):
        tokens[end - length:end - 1] = ids
        tokens[end - 1] = tokenizer.eos_id
    console.print(f"tokenized {dataset.path}: {len(texts)} documents, {len(tokens):,} tokens")
    return TokenSource(dataset_name(dataset), lambda start, length: tokens[start:start + length], ends,
                       tokenizer.fingerprint, int(tokens.max()))


def check_tokenizer(source: TokenSource, dataset: DatasetConfig, tokenizer, vocab_size: int) -> None:
    """Shards must come from this tokenizer and fit the model's vocabulary."""
    if source.fingerprint is not None and source.fingerprint != tokenizer.fingerprint:
        raise UserError(f"{dataset.path} was tokenized with a different tokenizer (fingerprint "
                        f"{source.fingerprint}) than {tokenizer.path} ({tokenizer.fingerprint}); re-run "
                        "`temper prep` with this tokenizer or pass the matching --tokenizer")
    if source.max_token_id is not None and source.max_token_id >= vocab_size:
        raise UserError(f"{dataset.path} holds token ids up to {source.max_token_id} but the model vocabulary "
                        f"has {vocab_size} entries; set model.vocab_size to at least {source.max_token_id + 1}")


def build_lm_data(config: Config, tokenizer, vocab_size: int, *,
                  val_split: tuple[float, int] | None = None) -> LmData:
    """Training batches and validation windows for causal language modelling.

    `val_split` (fraction, seed) replaces data.val_split and run.seed for the held-out split
    (post-training's val:new); the training order still follows run.seed.
    """
    data, seq_len = config.data, config.data.seq_len
    split_fraction, split_seed = val_split if val_split is not None else (data.val_split, config.run.seed)
    if not data.datasets:
        raise UserError("no training data: give --data PATH (shard dirs from `temper prep`, or raw text files)")
    train_sources, val_sources = [], []
    for dataset in data.datasets:
        source = open_source(dataset, tokenizer, "train")
        if source is None:
            raise UserError(f"{dataset.path}: the train split is empty")
        check_tokenizer(source, dataset, tokenizer, vocab_size)
        train_sources.append(source)
        held_out = None if data.val_data else open_source(dataset, tokenizer, "val")
        if held_out is not None:
            val_sources.append(held_out)

    train_packed: list[PackedSequences] = []
    val_packed: list[PackedSequences] = []
    if data.val_data:
        for dataset in data.val_data:
            source = open_source(dataset, tokenizer, "val") or open_source(dataset, tokenizer, "train")
            check_tokenizer(source, dataset, tokenizer, vocab_size)
            val_packed.append(_pack_all(source, seq_len))
    for index, source in enumerate(train_sources):
        if data.val_data or val_sources or split_fraction == 0:
            train_packed.append(_pack_all(source, seq_len))
            continue
        keep_train, keep_val = split_documents(source.document_ends, split_fraction, split_seed + index)
        train_packed.append(PackedSequences(spans_of_documents(source.read, source.document_ends, keep_train), seq_len))
        val_packed.append(PackedSequences(spans_of_documents(source.read, source.document_ends, keep_val), seq_len))
    val_packed += [_pack_all(source, seq_len) for source in val_sources]

    weights = [dataset.weight for dataset in data.datasets]
    batches = make_batches(train_packed, weights, config)
    val_packed = [p for p in val_packed if len(p)]
    return LmData(batches, {"val": val_packed} if val_packed else {}, train_sources, train_packed, weights)


def make_batches(packed: list[PackedSequences], weights: list[float], config: Config, *,
                 shuffle: bool = True) -> SequenceBatches:
    """Training micro-batches over packed datasets; an error when there is not one batch of data."""
    batches = SequenceBatches(packed, weights, config.training.batch_size, config.run.seed, shuffle=shuffle)
    if batches.batches_per_epoch == 0:
        raise UserError(f"the training data makes {batches.sequences_per_epoch} sequences of data.seq_len="
                        f"{config.data.seq_len}, fewer than one batch of training.batch_size="
                        f"{config.training.batch_size}; lower --batch-size or --seq-len, or add data")
    return batches


def _pack_all(source: TokenSource, seq_len: int) -> PackedSequences:
    keep = np.ones(len(source.document_ends), bool)
    return PackedSequences(spans_of_documents(source.read, source.document_ends, keep), seq_len)

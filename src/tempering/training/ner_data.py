"""The sentences a token-classification run trains and validates on, and their batches.

Pretraining (`temper pretrain --task ner`): `data.datasets` to train on; validation is
`data.val_data`, else a seeded `data.val_split` of the training sentences. Post-training
(`temper post-train --task ner`) adds the forgetting watch: `val:new` is `data.val_data`, else a
fresh split of the new data (`data.create_new_validation`, `validation_ratio`, `random_seed`),
`val:original` the validation set of the run that made the source
checkpoint (rebuilt from its `config.yaml`), else a held-out split of `--old-dataset`. Old
training data (strategies `combined`, `append`) never includes a sentence of val:original.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tempering.checkpoint.io import Checkpoint
from tempering.checkpoint.paths import is_checkpoint_dir
from tempering.config import load_config
from tempering.config.schema import Config, DatasetConfig
from tempering.data.ner.alignment import AlignedSentence, align_sentences
from tempering.data.ner.batches import SentenceBatches, SentenceEvalSet
from tempering.data.ner.labels import continuation_ids, ordered_labels
from tempering.data.ner.records import ReadReport, Sentence, read_sentences
from tempering.errors import UserError
from tempering.tokenizer import TokenizerBundle
from tempering.tokenizer.encoder_tokens import EncoderTokens
from tempering.tracking.console import console, warn
from tempering.training.chat_setup import split_items

MAX_REPORTED = 3  # refused sentences named one by one; the rest counted


@dataclass
class NerSentences:
    """A run's sentences by role, before alignment."""

    train: list[Sentence]  # new data (post-training) or all training data
    val: list[Sentence]  # val (pretraining) or val:new
    old_train: list[Sentence] = field(default_factory=list)  # combined / append only
    original_val: list[Sentence] = field(default_factory=list)  # val:original (post-training)
    report: ReadReport = field(default_factory=ReadReport)

    def all_sets(self) -> list[list[Sentence]]:
        """Every set whose tags the head must be able to name."""
        return [self.train, self.val, self.old_train, self.original_val]

    def labels(self, config: Config) -> tuple[str, ...]:
        """The data's label list: ner.labels when set, else every tag seen, ordered (O, then B-/I- by type)."""
        if config.ner.labels:
            return tuple(config.ner.labels)
        return ordered_labels(tag for sentences in self.all_sets() for s in sentences for tag in s.tags)

    def tag_counts(self) -> dict[str, int]:
        """How often each tag occurs in the (new) training sentences."""
        return dict(Counter(tag for sentence in self.train for tag in sentence.tags))


def read_ner_sentences(config: Config, source: Checkpoint | None = None) -> NerSentences:
    """Read and split the run's sentences (see the module docstring); UserError when a set is empty."""
    if not config.data.datasets:
        raise UserError("no training data: give --data PATH (pretrain) or --new-dataset PATH (post-train): "
                        "NER files (.jsonl/.json/.conll/.parquet)")
    report = ReadReport()
    train, val = _train_and_val(config.data.datasets, config.data.val_data, config, report)
    sentences = NerSentences(train=train, val=val, report=report)
    if source is None:
        return sentences
    sentences.original_val = _source_run_validation(source, config, report)
    old = _read(config.data.old_datasets, config, report) if config.data.old_datasets else []
    if not sentences.original_val and old:
        old, sentences.original_val = split_items(old, config.data.val_split, config.run.seed)
    if config.data.strategy != "new_only":
        if not old:
            raise UserError(f"data.strategy {config.data.strategy} trains on old and new data: give the original "
                            "data with --old-dataset PATH (data.old_datasets)")
        held_out = {(s.words, s.tags) for s in sentences.original_val}
        sentences.old_train = [s for s in old if (s.words, s.tags) not in held_out]
    if not sentences.original_val:
        console.print("no original validation data found (give --old-dataset): only val:new is watched")
    return sentences


def _read(datasets: list[DatasetConfig], config: Config, report: ReadReport) -> list[Sentence]:
    sentences: list[Sentence] = []
    for dataset in datasets:
        read = read_sentences([dataset.path], config.ner, config.prep, report)
        sentences += read[:dataset.limit] if dataset.limit else read
    return sentences


def _train_and_val(datasets: list[DatasetConfig], val_data: list[DatasetConfig], config: Config,
                   report: ReadReport) -> tuple[list[Sentence], list[Sentence]]:
    """Training sentences and their validation: val_data, else the seeded split `config.validation_split()` says."""
    train = _read(datasets, config, report)
    if val_data:
        return train, _read(val_data, config, report)
    return split_items(train, *config.validation_split())


def _source_run_validation(source: Checkpoint, config: Config, report: ReadReport) -> list[Sentence]:
    """The validation sentences of the token-classification run that produced `source`, if it can be rebuilt."""
    for run_dir in (source.path.parent, source.path.parent.parent):
        frozen = run_dir / "config.yaml"
        if not frozen.is_file() or is_checkpoint_dir(run_dir):
            continue
        try:
            source_config = load_config(frozen)
            if source_config.task != "token_classification":
                return []
            source_config = source_config.model_copy(update={"ner": config.ner, "prep": config.prep})
            return _train_and_val(source_config.data.datasets, source_config.data.val_data, source_config,
                                  report)[1]
        except UserError as exc:
            console.print(f"cannot rebuild the original validation set from {frozen}: {exc}")
            return []
    return []


@dataclass
class NerBatches:
    """Training batches and validation sets of a token-classification run."""

    train: SentenceBatches
    val_sets: dict[str, list[SentenceEvalSet]]
    num_train_sentences: int


def build_ner_batches(config: Config, sentences: NerSentences, labels: tuple[str, ...], tokenizer: TokenizerBundle,
                      tokens: EncoderTokens, *, post_training: bool) -> NerBatches:
    """Align every set to word pieces with `labels`' ids and batch it; refused sentences are warned about."""
    index = {label: i for i, label in enumerate(labels)}
    continuation = continuation_ids(labels)
    refused: list[tuple[str, str]] = []
    truncated = [0]

    def aligned(items: list[Sentence]) -> list[AlignedSentence]:
        result, bad = align_sentences(items, index, tokenizer, tokens, max_len=config.data.seq_len,
                                      label_all_tokens=config.ner.label_all_tokens, continuation=continuation)
        refused.extend(bad)
        truncated[0] += sum(s.num_truncated_words for s in result)
        return result

    old, new = aligned(sentences.old_train), aligned(sentences.train)
    splits = {"val:new" if post_training else "val": aligned(sentences.val),
              "val:original": aligned(sentences.original_val)}
    _report_refused(refused, truncated[0], config)
    if not new:
        raise UserError("no training sentences left after aligning them to word pieces")
    strategy = config.data.strategy if post_training else "new_only"
    train = SentenceBatches(old + new if strategy != "new_only" else new, batch_size=config.training.batch_size,
                            seed=config.run.seed, pad_id=tokens.pad_id, group_by_length=config.ner.group_by_length,
                            segments=[len(old), len(new)] if strategy == "append" and old else None)
    val_sets = {split: [SentenceEvalSet(items, tokens.pad_id)] for split, items in splits.items() if items}
    return NerBatches(train, val_sets, len(old) + len(new) if strategy != "new_only" else len(new))


def _report_refused(refused: list[tuple[str, str]], truncated_words: int, config: Config) -> None:
    for where, reason in refused[:MAX_REPORTED]:
        warn(f"{where}: {reason}; sentence skipped")
    if len(refused) > MAX_REPORTED:
        warn(f"{len(refused) - MAX_REPORTED} more sentences skipped (a word without a word piece of its own)")
    if truncated_words:
        warn(f"{truncated_words} words lie beyond data.seq_len={config.data.seq_len} word pieces and were cut off "
             "(they are neither trained nor scored); raise --seq-len")


def describe_read(sentences: NerSentences) -> str:
    """One line: sentences per role, bad rows skipped, scheme repairs."""
    parts = [f"{len(sentences.train):,} training sentences", f"{len(sentences.val):,} validation"]
    if sentences.old_train:
        parts.append(f"{len(sentences.old_train):,} old training")
    if sentences.original_val:
        parts.append(f"{len(sentences.original_val):,} original validation")
    report = sentences.report
    if report.num_bad_rows:
        parts.append(f"{report.num_bad_rows:,} bad rows skipped")
    if report.num_repaired:
        parts.append(f"{report.num_repaired:,} sentences with an I- tag starting an entity repaired to B-")
    return "NER data: " + ", ".join(parts)

"""The images a captioning run trains and validates on, tokenized and batched.

Pretraining (`temper pretrain --preset vision_*`): `data.datasets` (caption JSON files) to
train on; validation is `data.val_data`, else each file's `NAME.val.json` sibling (what `temper
prep --format images --val-fraction` writes), else a seeded `data.val_split` of the training
images. Post-training adds the forgetting watch: `val:new` is the new data's validation (as
above) and `val:original` the old data's (`--old-dataset`), else the validation set of the
run that made the source checkpoint, rebuilt from its `config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tempering.checkpoint.io import Checkpoint
from tempering.checkpoint.paths import is_checkpoint_dir
from tempering.config import load_config
from tempering.config.schema import Config, DatasetConfig
from tempering.data.images.batches import CaptionBatches, CaptionEvalSet, tokenize_examples
from tempering.data.images.records import CaptionRecord, ReadReport, read_caption_file, val_sibling
from tempering.errors import UserError
from tempering.tracking.console import console, warn
from tempering.training.chat_setup import split_items


@dataclass
class CaptionData:
    """Training batches, validation sets by split, and counts for the start-up line."""

    train: CaptionBatches
    val_sets: dict[str, list[CaptionEvalSet]]
    num_train_images: int


def read_records(datasets: list[DatasetConfig], val_data: list[DatasetConfig], config: Config,
                 report: ReadReport) -> tuple[list[CaptionRecord], list[CaptionRecord]]:
    """(training records, validation records) of one group of caption files (see the module docstring)."""
    train: list[CaptionRecord] = []
    siblings: list[CaptionRecord] = []
    for dataset in datasets:
        records = read_caption_file(dataset.path, report)
        train += records[:dataset.limit] if dataset.limit else records
        if not val_data and val_sibling(dataset.path).is_file():
            siblings += read_caption_file(val_sibling(dataset.path), report)
    if val_data:
        return train, [r for d in val_data for r in read_caption_file(d.path, report)]
    if siblings:
        return train, siblings
    return split_items(train, config.data.val_split, config.run.seed)


def build_caption_data(config: Config, tokenizer, *, image_size: int, max_text_tokens: int,
                       source: Checkpoint | None = None) -> CaptionData:
    """Training batches and validation sets of a captioning run (pretraining when `source` is None)."""
    if not config.data.datasets:
        raise UserError("no training data: give --data IMAGES.json (pretrain) or --new-dataset IMAGES.json "
                        "(post-train), written by `temper prep --format images`")
    report = ReadReport()
    new_train, new_val = read_records(config.data.datasets, config.data.val_data, config, report)
    old_train, original_val = [], []
    strategy = config.data.strategy if source is not None else "new_only"
    if source is not None:
        if config.data.old_datasets:
            old_train, original_val = read_records(config.data.old_datasets, [], config, report)
        else:
            original_val = _source_run_validation(source, report)
        if strategy != "new_only" and not old_train:
            raise UserError(f"data.strategy {strategy} trains on old and new data: give the original data with "
                            "--old-dataset IMAGES.json (data.old_datasets)")
        if not original_val:
            console.print("no original validation data found (give --old-dataset): only val:new is watched")
    if report.missing_images:
        warn(f"{len(report.missing_images)} records name an image that does not exist (first: "
             f"{report.missing_images[0]}); skipped")
    if not new_train:
        raise UserError(f"no training images left in {', '.join(d.path for d in config.data.datasets)}")

    splits = {"train:new": new_train, "train:old": old_train,
              "val:new" if source is not None else "val": new_val, "val:original": original_val}
    tokenized = {split: tokenize_examples(records, tokenizer, config.vision.prompt, max_text_tokens)
                 for split, records in splits.items()}
    new, old = tokenized["train:new"][0], tokenized["train:old"][0]
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    groups = [old, new] if strategy != "new_only" else [new]
    train = CaptionBatches(groups, [1.0] * len(groups), batch_size=config.training.batch_size, seed=config.run.seed,
                           image_size=image_size, pad_id=pad_id, augment_images=config.vision.augment,
                           shuffle=strategy != "append")
    if train.batches_per_epoch == 0:
        raise UserError(f"{len(new) + len(old)} training images make less than one batch of training.batch_size="
                        f"{config.training.batch_size}; lower --batch-size or add images")
    val_sets = {split: [CaptionEvalSet(examples, image_size=image_size, pad_id=pad_id)]
                for split, (examples, _) in tokenized.items() if split.startswith("val") and examples}
    num_cut = sum(cut for _, cut in tokenized.values())
    if num_cut:
        warn(f"{num_cut} captions are longer than data.seq_len={max_text_tokens} tokens with the prompt and were cut "
             "(raise --seq-len)")
    return CaptionData(train, val_sets, len(new) + len(old))


def _source_run_validation(source: Checkpoint, report: ReadReport) -> list[CaptionRecord]:
    """The validation images of the captioning run that produced `source`, if its config.yaml is beside it."""
    for run_dir in (source.path.parent, source.path.parent.parent):
        frozen = run_dir / "config.yaml"
        if not frozen.is_file() or is_checkpoint_dir(run_dir):
            continue
        try:
            source_config = load_config(frozen)
            return read_records(source_config.data.datasets, source_config.data.val_data, source_config, report)[1]
        except UserError as exc:
            console.print(f"cannot rebuild the original validation set from {frozen}: {exc}")
            return []
    return []

"""`temper eval` on a vision checkpoint: caption loss, perplexity, exact match and CER on image-caption JSON files."""

from __future__ import annotations

from pathlib import Path

from tempering.checkpoint.io import load_checkpoint
from tempering.checkpoint.model_loading import LoadedModel, load_model
from tempering.data.images.batches import CaptionEvalSet, tokenize_examples
from tempering.data.images.records import CaptionRecord, ReadReport, read_caption_file
from tempering.errors import UserError
from tempering.tracking.console import warn
from tempering.training.captioning import Captioning
from tempering.training.captioning_run import trains_captions
from tempering.training.device import pick_device
from tempering.training.validation import evaluate


def is_captioner(checkpoint: str) -> bool:
    """Whether `checkpoint` (a checkpoint or run dir) holds an image captioner."""
    return trains_captions(load_checkpoint(checkpoint).family)


def evaluate_captions(checkpoint: str, paths: list[str], *, batch_size: int, max_batches: int | None,
                      device: str) -> list[dict]:
    """One row per caption JSON: images, caption tokens, loss, ppl, exact_match, cer."""
    loaded = load_model(checkpoint, device=pick_device(device))
    objective = Captioning(loaded.tokenizer.decode, loaded.tokenizer.eos_id)
    rows = []
    for path in paths:
        if "=" in path and not Path(path).exists():
            raise UserError(f"--data {path}: a vision checkpoint evaluates image-caption JSON files, given by path")
        report = ReadReport()
        records = read_caption_file(path, report)
        if report.missing_images:
            warn(f"{path}: {len(report.missing_images)} images do not exist (first: {report.missing_images[0]}); "
                 "skipped")
        if not records:
            raise UserError(f"{path} holds no image whose file exists")
        values = evaluate(loaded.model, [caption_eval_set(loaded, records)], objective, batch_size=batch_size,
                          device=next(loaded.model.parameters()).device, max_batches=max_batches)
        rows.append({"path": path, "images": len(records), **values})
    return rows


def caption_eval_set(loaded: LoadedModel, records: list[CaptionRecord]) -> CaptionEvalSet:
    """The records tokenized as the checkpoint trained (its prompt, its caption length), batched for evaluation."""
    meta, tokenizer, arch = loaded.checkpoint.meta, loaded.tokenizer, loaded.arch
    max_text = min(int(meta.get("seq_len") or arch.lm.max_seq_len), arch.lm.max_seq_len - arch.num_patches)
    examples, _ = tokenize_examples(records, tokenizer, meta.get("prompt") or "", max_text)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    return CaptionEvalSet(examples, image_size=arch.image_size, pad_id=pad_id)

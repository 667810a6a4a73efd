"""`temper eval`: loss and perplexity of a checkpoint on one or more datasets."""

from __future__ import annotations

import torch

from tempering.checkpoint.model_loading import load_model
from tempering.config.schema import DatasetConfig
from tempering.data.datasets import check_tokenizer, dataset_name, open_source
from tempering.data.packing import PackedSequences, spans_of_documents
from tempering.errors import UserError
from tempering.training.causal_lm import CausalLM
from tempering.training.device import pick_device
from tempering.training.validation import evaluate


def parse_dataset_specs(specs: list[str], limits: list[str]) -> list[DatasetConfig]:
    """`PATH` or `NAME=PATH` datasets, with `NAME=N` (or a bare `N` for all) document limits."""
    datasets = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and not (name and path):
            raise UserError(f"--data {spec!r}: {'the dataset name before' if not name else 'the path after'} '=' is "
                            "empty; write NAME=PATH, or just PATH")
        datasets.append(DatasetConfig(path=path, name=name) if sep else DatasetConfig(path=spec))
    by_name: dict[str, int] = {}
    for item in limits:
        name, sep, value = item.rpartition("=")
        if not value.isdigit() or int(value) <= 0:
            raise UserError(f"--limit {item!r}: expected NAME=N or N with N a positive number of documents")
        by_name[name if sep else "*"] = int(value)
    names = {dataset_name(d) for d in datasets}
    unknown = [n for n in by_name if n != "*" and n not in names]
    if unknown:
        raise UserError(f"--limit names unknown dataset {unknown[0]!r} (datasets: {', '.join(sorted(names))})")
    for d in datasets:
        limit = by_name.get(dataset_name(d), by_name.get("*"))
        if limit is not None:
            d.limit = limit
    return datasets


def evaluate_checkpoint(checkpoint: str, datasets: list[DatasetConfig], *, split: str = "auto",
                        seq_len: int | None = None, batch_size: int = 8, max_batches: int | None = None,
                        device: str = "auto") -> dict:
    """Loss/perplexity per dataset; shard dirs use their val split under split=auto when they have one."""
    loaded = load_model(checkpoint, device=pick_device(device))
    if "causal_lm" not in loaded.family.tasks:
        raise UserError(f"{loaded.checkpoint.path} holds an {loaded.family.name} model: `temper eval` measures "
                        "next-token perplexity; an encoder's validation (loss, entity F1) is in its run's "
                        "metrics.jsonl")
    model, tokenizer = loaded.model, loaded.tokenizer
    context = loaded.family.context_length(loaded.arch)
    seq_len = seq_len or loaded.checkpoint.meta.get("seq_len") or 256
    seq_len = min(seq_len, context) if context else seq_len
    results = {}
    for dataset in datasets:
        source = None
        if split in ("auto", "val"):
            source = open_source(dataset, tokenizer, "val")
            if source is None and split == "val":
                raise UserError(f"{dataset.path} has no val split (use --split train or auto)")
        source = source or open_source(dataset, tokenizer, "train")
        check_tokenizer(source, dataset, tokenizer, loaded.family.vocab_size(loaded.arch))
        keep = torch.ones(len(source.document_ends), dtype=torch.bool).numpy()
        windows = PackedSequences(spans_of_documents(source.read, source.document_ends, keep), seq_len)
        if len(windows) == 0:
            raise UserError(f"{dataset.path}: fewer than {seq_len + 1} tokens, too few for one window of --seq-len")
        values = evaluate(model, [windows], CausalLM(), batch_size=batch_size,
                          device=next(model.parameters()).device, max_batches=max_batches)
        results[dataset_name(dataset)] = {**values, "documents": len(source.document_ends), "path": dataset.path}
    return {"checkpoint": str(loaded.checkpoint.path), "step": loaded.checkpoint.meta.get("step"),
            "seq_len": seq_len, "datasets": results}

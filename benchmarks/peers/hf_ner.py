"""HF `Trainer` + `DistilBertForTokenClassification` on pre-aligned NER rows: the peer row of `ner_vs_hf.py`.

    python benchmarks/peers/hf_ner.py SPEC.json

SPEC: {"init": checkpoint dir, "train": rows .jsonl (input_ids, labels), "output": dir, "epochs", "batch_size",
"lr", "warmup_steps", "weight_decay", "adam_beta2", "seed", "group_by_length", optional "max_steps"}. The rows are the very
word-piece ids and labels Tempering trains on (aligned by the benchmark), so both sides see the same
data; padding is to the longest row of a batch, labels -100 on pads, as DataCollatorForTokenClassification
does. Writes OUTPUT/result.json: train_runtime_s, tokens (non-pad, over all epochs), steps, and saves the
model to OUTPUT/final.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import transformers


class Rows(torch.utils.data.Dataset):
    """Pre-aligned rows as tensors."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def collate(pad_id: int):
    """Pad input_ids with pad_id, labels with -100, and build the attention mask."""

    def pad(features: list[dict]) -> dict:
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), pad_id, dtype=torch.long)
        labels = torch.full((len(features), length), -100, dtype=torch.long)
        mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            ids[row, :size] = torch.tensor(feature["input_ids"])
            labels[row, :size] = torch.tensor(feature["labels"])
            mask[row, :size] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return pad


def _grouping(group_by_length: bool) -> dict:
    """The TrainingArguments that pick the sampler: transformers 5 names a strategy, 4.x had a switch."""
    fields = transformers.TrainingArguments.__dataclass_fields__
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


class CountingTrainer(transformers.Trainer):
    """Trainer that counts the non-pad tokens of every training step it runs."""

    tokens = 0

    def training_step(self, model, inputs, *args, **kwargs):
        self.tokens += int(inputs["attention_mask"].sum())
        return super().training_step(model, inputs, *args, **kwargs)


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    output = Path(spec["output"])
    rows = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
    model = transformers.AutoModelForTokenClassification.from_pretrained(spec["init"])
    pad_id = model.config.pad_token_id
    args = transformers.TrainingArguments(
        output_dir=str(output / "trainer"), per_device_train_batch_size=spec["batch_size"],
        num_train_epochs=spec["epochs"], max_steps=spec.get("max_steps", -1), learning_rate=spec["lr"], weight_decay=spec["weight_decay"],
        adam_beta1=0.9, adam_beta2=spec["adam_beta2"], adam_epsilon=1e-8, max_grad_norm=1.0,
        lr_scheduler_type="cosine", warmup_steps=spec["warmup_steps"], logging_steps=50, save_strategy="no",
        eval_strategy="no", report_to=[], dataloader_num_workers=0, seed=spec["seed"], use_cpu=True,
        disable_tqdm=True, **_grouping(spec["group_by_length"]))
    for row in rows:
        row["length"] = len(row["input_ids"])
    trainer = CountingTrainer(model=model, args=args, train_dataset=Rows(rows), data_collator=collate(pad_id))
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    trainer.save_model(str(output / "final"))
    tokens = trainer.tokens
    (output / "result.json").write_text(json.dumps({
        "train_runtime_s": result.metrics["train_runtime"], "wall_s": wall, "tokens": tokens,
        "steps": result.global_step, "train_loss": result.training_loss}))


if __name__ == "__main__":
    main(sys.argv[1])

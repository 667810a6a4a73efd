"""Peer row: `peft` LoRA + HF `Trainer` on the exported model, over the same rendered, padded chat rows.

The rows are rendered by the parent (Tempering's chat template, loss on assistant tokens) and
padded per batch to the longest row with labels -100, as Tempering's unpacked SFT does; LoRA
has the same rank, alpha, dropout and target modules. Tokens per step count non-pad tokens.
"""

from __future__ import annotations

import json

from peers.protocol import StepClock, hf_training_arguments, load_spec


def main() -> None:
    """Train for spec["steps"] optimizer steps and report the step clock."""
    spec = load_spec()
    clock = StepClock()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    with open(spec["rendered"], encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    pad_id = spec["pad_id"]
    batch_tokens: list[int] = []

    def collate(examples):
        length = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), length), pad_id)
        labels = torch.full((len(examples), length), -100)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = (torch.tensor(example["input_ids"]),
                                                           torch.tensor(example["labels"]), 1)
        batch_tokens.append(int(mask.sum()))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(batch_tokens[-1] if batch_tokens else 0)

    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                                             target_modules=spec["lora_targets"], task_type="CAUSAL_LM"))
    args = TrainingArguments(**hf_training_arguments(spec), remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[StepTimes()])
    result = trainer.train()
    clock.finish(final_loss=result.training_loss, optimizer=str(args.optim), torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()

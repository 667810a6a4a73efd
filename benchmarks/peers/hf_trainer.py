"""Peer row: HF `Trainer` on `LlamaForCausalLM` over a `datasets.Dataset` of the packed windows.

The `run_clm` recipe: `input_ids` windows with `labels` a copy of them, Trainer's
default collator and optimizer (fused AdamW on torch >= 2.8), the same learning rate,
betas, epsilon, weight decay, clipping and constant schedule as Tempering.
"""

from __future__ import annotations

from peers.protocol import StepClock, hf_training_arguments, load_spec, load_windows


def main() -> None:
    """Train for spec["steps"] optimizer steps and report the step clock."""
    spec = load_spec()
    clock = StepClock()
    import torch
    from datasets import Dataset
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(spec["batch_size"] * spec["seq_len"])

    windows = load_windows(spec)
    dataset = Dataset.from_dict({"input_ids": windows, "labels": windows}).with_format("torch")
    model = LlamaForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    args = TrainingArguments(**hf_training_arguments(spec))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[StepTimes()])
    result = trainer.train()
    clock.finish(final_loss=result.training_loss, optimizer=str(args.optim),
                 torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()

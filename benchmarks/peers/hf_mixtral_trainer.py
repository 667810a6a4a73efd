"""Peer row: HF `Trainer` on `MixtralForCausalLM` over the packed windows (the MoE throughput benchmark).

The same recipe as `hf_trainer.py` (labels a copy of the inputs, Trainer's default collator and
optimizer, the same AdamW settings and constant schedule), with `output_router_logits` on so
Trainer trains on the load-balancing loss at the checkpoint's `router_aux_loss_coef`, as
Tempering does. The windows are a plain torch Dataset (no `datasets` package needed).
"""

from __future__ import annotations

from peers.protocol import StepClock, hf_training_arguments, load_spec, load_windows


def main() -> None:
    """Train for spec["steps"] optimizer steps and report the step clock."""
    spec = load_spec()
    clock = StepClock()
    import torch
    from transformers import MixtralForCausalLM, Trainer, TrainerCallback, TrainingArguments

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(spec["batch_size"] * spec["seq_len"])

    class Windows(torch.utils.data.Dataset):
        def __init__(self, windows):
            self.windows = windows

        def __len__(self):
            return len(self.windows)

        def __getitem__(self, index):
            ids = torch.as_tensor(self.windows[index].astype("int64"))
            return {"input_ids": ids, "labels": ids}

    model = MixtralForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32, output_router_logits=True)
    args = TrainingArguments(**hf_training_arguments(spec))
    trainer = Trainer(model=model, args=args, train_dataset=Windows(load_windows(spec)), callbacks=[StepTimes()])
    result = trainer.train()
    clock.finish(final_loss=result.training_loss, optimizer=str(args.optim), torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()

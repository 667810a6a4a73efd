"""Peer row: TRL `SFTTrainer` with packing (strategy from the spec: "bfd" or "wrapped") on `messages` chats.

"bfd" packs whole examples best-fit-decreasing and trains padding-free (each batch
flattened into one row with restarting position ids; on CPU, transformers turns those
into a block-diagonal SDPA mask). "wrapped" concatenates everything and cuts rows of
max_length, attention crossing example boundaries. Tokens per step are TRL's own count
of non-padding input tokens.
"""

from __future__ import annotations

from peers.protocol import StepClock, hf_training_arguments, load_chats, load_spec


def main() -> None:
    """Train for spec["steps"] optimizer steps and report the step clock."""
    spec = load_spec()
    clock = StepClock()
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.tokens_before = 0

        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(state.num_input_tokens_seen - self.tokens_before)
            self.tokens_before = state.num_input_tokens_seen

    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    tokenizer.chat_template = spec["chat_template"]
    dataset = Dataset.from_list([{"messages": record["messages"]} for record in load_chats(spec)])
    model = LlamaForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    config = SFTConfig(**hf_training_arguments(spec), packing=True, packing_strategy=spec["packing_strategy"],
                       max_length=spec["seq_len"], include_num_input_tokens_seen="non_padding")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[StepTimes()])
    result = trainer.train()
    clock.finish(final_loss=result.training_loss, optimizer=str(config.optim),
                 torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()

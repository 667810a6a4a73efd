"""Peer row: a minimal hand-written PyTorch loop over HF `LlamaForCausalLM` (no trainer framework).

What a user writes when they skip the frameworks: shuffled windows, forward with
labels, backward, clip, AdamW step. Same optimizer settings, decay groups and
schedule (constant) as Tempering.
"""

from __future__ import annotations

import contextlib

import numpy as np

from peers.protocol import StepClock, load_spec, load_windows


def main() -> None:
    """Train for spec["steps"] optimizer steps and report the step clock."""
    spec = load_spec()
    clock = StepClock()
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed_tokens" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": spec["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"])
    windows = load_windows(spec)
    batch_size = spec["batch_size"]
    order = np.random.default_rng(spec["seed"]).permutation(len(windows))
    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if spec["precision"] == "bf16"
           else contextlib.nullcontext())
    for step in range(spec["steps"]):
        start = step * batch_size % (len(order) - batch_size + 1)
        input_ids = torch.from_numpy(windows[np.sort(order[start:start + batch_size])].astype(np.int64))
        with amp:
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.step_done(input_ids.numel())
    clock.finish(final_loss=loss.item(), torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()

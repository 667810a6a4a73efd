"""Where a Tempering training step spends its time: torch.profiler over steady-state steps.

Runs the same step `temper pretrain` runs (nano preset, chunked loss, fused AdamW,
gradient clipping) on random tokens, eagerly, and prints the per-op table plus a
grouped summary (GEMMs, attention, casts, element-wise, optimizer) with per-step ms.

    python benchmarks/profile_step.py                   # fp32
    python benchmarks/profile_step.py --precision bf16  # bf16 autocast
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_model_arguments
from torch.profiler import ProfilerActivity, profile

from tempering.models.llama.model import build_model
from tempering.models.registry import find_preset
from tempering.training.adamw import AdamW
from tempering.training.causal_lm import CausalLM

GROUPS = {  # op name prefix -> group; first match wins
    "aten::mm": "GEMMs", "aten::addmm": "GEMMs", "aten::bmm": "GEMMs",
    "aten::_scaled_dot_product": "attention (SDPA forward + backward)",
    "aten::copy_": "dtype casts and copies", "aten::_to_copy": "dtype casts and copies",
    "aten::_fused_adamw_": "AdamW (fused kernel)",
    "aten::linalg_vector_norm": "gradient clipping",
}


def main() -> None:
    """Profile `--steps` steps after `--warmup` and print where the time goes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rows", type=int, default=25, help="Rows of the per-op table.")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(find_preset(args.preset)[1].with_overrides(vocab_size=args.vocab_size))
    objective = CausalLM()
    optimizer = AdamW([{"params": list(model.parameters()), "weight_decay": 0.1}], lr=3e-4, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = {"tokens": torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len + 1), generator=generator)}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss_sum, num_tokens, _ = objective(model, batch)
        (loss_sum / num_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_s = (time.perf_counter() - started) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    grouped: dict[str, float] = {}
    for event in events:
        group = next((g for prefix, g in GROUPS.items() if event.key.startswith(prefix)), "everything else")
        grouped[group] = grouped.get(group, 0.0) + event.self_cpu_time_total
    print(f"{args.preset}, {args.precision}, batch {args.batch_size} x {args.seq_len}: {step_s:.3f} s a step "
          f"without the profiler")
    for group, micros in sorted(grouped.items(), key=lambda item: -item[1]):
        print(f"  {group:40s} {micros / total:6.1%}  {micros / 1e3 / args.steps:7.1f} ms/step (profiled)")


if __name__ == "__main__":
    main()

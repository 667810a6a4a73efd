"""What every peer runner shares: its spec file in, JSON lines out, and the step clock.

A runner is started as `python -m peers.NAME SPEC.json` (with the benchmarks folder on
PYTHONPATH). It prints one JSON line `{"event": "first_step", "unix_time": ...}` the
moment its first optimizer step has finished, and at the end one `{"event": "done", ...}`
line holding the finish time of every step and the tokens each step consumed. Imports
nothing heavy, so a runner's start-up cost is its own library's.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def load_spec() -> dict:
    """Read the spec JSON named by the first command-line argument."""
    with open(sys.argv[1], encoding="utf-8") as file:
        return json.load(file)


def emit(record: dict) -> None:
    """Print one JSON line and flush it, so the parent sees it at once."""
    print(json.dumps(record), flush=True)


class StepClock:
    """Finish times (perf_counter seconds) and token counts of optimizer steps."""

    def __init__(self):
        self.step_end_s: list[float] = []
        self.step_tokens: list[int] = []

    def step_done(self, num_tokens: int) -> None:
        """Record that an optimizer step finished, having consumed `num_tokens` input tokens."""
        self.step_end_s.append(time.perf_counter())
        self.step_tokens.append(int(num_tokens))
        if len(self.step_end_s) == 1:
            emit({"event": "first_step", "unix_time": time.time()})

    def finish(self, **extra) -> None:
        """Print the `done` line with every step's finish time and tokens, plus `extra`."""
        emit({"event": "done", "step_end_s": self.step_end_s, "step_tokens": self.step_tokens, **extra})


def load_windows(spec: dict) -> np.ndarray:
    """The packed token windows (num_windows, seq_len) the pretraining rows all train on."""
    return np.load(spec["windows"], mmap_mode="r")[:, : spec["seq_len"]]


def load_chats(spec: dict) -> list[dict]:
    """The `messages` records of the SFT rows' chat JSONL."""
    with open(spec["chat_data"], encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def hf_training_arguments(spec: dict) -> dict:
    """Keyword arguments shared by `TrainingArguments` and TRL's `SFTConfig` for this workload."""
    return dict(
        output_dir=spec["out_dir"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"], adam_beta1=spec["betas"][0], adam_beta2=spec["betas"][1],
        adam_epsilon=spec["eps"], weight_decay=spec["weight_decay"], max_grad_norm=spec["grad_clip"],
        lr_scheduler_type="constant", warmup_steps=0, seed=spec["seed"], bf16=spec["precision"] == "bf16",
        use_cpu=True, report_to="none", save_strategy="no", dataloader_num_workers=0,
    )

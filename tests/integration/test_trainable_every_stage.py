"""Freezing and progressive unfreezing work the same in every training stage (one assembly).

Each stage runs 3 steps with `model.layers.1.mlp` frozen and progressive unfreezing (top block
first, one more block every 2 of the run's own steps), saving a checkpoint at every step. Frozen weights must be
bit-identical throughout; block 0 must stay put for steps 1-2 and move at step 3, when the
`unfreeze` event says it joined.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tempering.tracking.metrics import read_metrics
from tests.conftest import run_temper
from tests.integration.conftest import TINY_RUN

RULES = ["training.freeze=[model.layers.1.mlp.*]", "training.unfreeze_top_blocks=1",
         "training.unfreeze_every_steps=2", "--max-steps", "3", "--save-steps", "1",
         "training.save_total_limit=3", "--lr", "1e-2", "--warmup-steps", "0", "training.log_steps=1"]
CHAT = ["--seq-len", "128", "--batch-size", "2", "--val-split", "0"]


def stage_command(stage, workspace, base_run, run):
    corpus = workspace / "corpus"
    if stage == "pretrain":
        return ["pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", *TINY_RUN]
    if stage == "post-train":
        # Freezing changes the optimizer's parameter groups, so the source's moments cannot carry over.
        return ["post-train", "--checkpoint", base_run, "--new-dataset", workspace / "code_shards",
                "--seq-len", "32", "--batch-size", "4", "--reset-optimizer"]
    if stage == "sft":
        return ["sft", "--checkpoint", base_run, "--data", corpus / "chat" / "chat_val.jsonl", *CHAT]
    return ["dpo", "--checkpoint", base_run, "--data", corpus / "chat" / "preference_val.jsonl", *CHAT,
            "data.datasets.0.limit=16"]


def weights(path):
    return load_file(path / "model.safetensors")


def group(state, prefix):
    return {name: tensor for name, tensor in state.items() if name.startswith(prefix)}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("stage", ["pretrain", "post-train", "sft", "dpo"])
def test_frozen_weights_never_move_and_blocks_unfreeze_on_schedule(stage, workspace, base_run, tmp_path):
    run = tmp_path / "run"
    result = run_temper(*stage_command(stage, workspace, base_run, run), "--save-dir", run, *RULES, check=True)
    assert "trainable parameters" in result.stderr
    periodic = sorted((run / "checkpoints").iterdir())  # post-train continues the source's step count
    assert len(periodic) == 3
    steps = {index: weights(path) for index, path in enumerate(periodic, 1)}
    start = steps[1] if stage == "pretrain" else weights(base_run / "final")
    first = 12 if stage == "post-train" else 0

    frozen = "model.layers.1.mlp."
    assert group(start, frozen) and all(same(group(steps[s], frozen), group(start, frozen)) for s in steps)
    block0 = "model.layers.0."
    assert same(group(steps[1], block0), group(start, block0))
    assert same(group(steps[2], block0), group(start, block0))
    assert not same(group(steps[3], block0), group(start, block0))
    attention1 = "model.layers.1.self_attn."
    assert not same(group(steps[2], attention1), group(steps[1], attention1))  # the top block trains from step 1

    events = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "unfreeze"]
    assert events == [{"event": "unfreeze", "step": first + 3, "parameters": "layers.0"}]

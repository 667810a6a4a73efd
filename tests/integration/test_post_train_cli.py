"""`temper post-train` end to end: state carry-over, resolution, strategies, freezing, recovery, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tempering.config import load_config
from tempering.tracking.metrics import read_metrics
from tests.conftest import assert_user_error, reached, run_temper


@pytest.fixture
def post_train(workspace, base_run, tmp_path):
    """Run `temper post-train` from the base run onto the code shards, with extra args."""

    def run(save_dir, *extra, checkpoint=True, check=True, env=None):
        source = ["--checkpoint", base_run] if checkpoint else []
        return run_temper("post-train", *source, "--new-dataset", workspace / "code_shards",
                          "--save-dir", save_dir, "--seq-len", "32", "--batch-size", "4", "--lr", "1e-3",
                          "training.eval_max_batches=4", "training.log_steps=1", *extra,
                          env={"TEMPERING_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}, check=check)

    return run


def records(run_dir, split=None, event=None):
    rows = read_metrics(run_dir / "metrics.jsonl")
    if split:
        return [r for r in rows if r.get("split") == split]
    return [r for r in rows if r.get("event") == event]


def test_post_training_lowers_val_new_and_watches_val_original(post_train, workspace, tmp_path):
    run = tmp_path / "post"
    post_train(run, "--old-dataset", workspace / "shards", "--strategy", "combined", "--max-steps", "20",
               "--eval-steps", "5", "--lr", "3e-3")
    new, original = records(run, split="val:new"), records(run, split="val:original")
    assert [r["step"] for r in new] == [r["step"] for r in original] == [12, 15, 20, 25, 30, 32]
    assert new[-1]["ppl"] < new[0]["ppl"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["val_at_start"]) == set(summary["val_at_end"]) == {"val:new", "val:original"}
    meta = json.loads((run / "final" / "meta.json").read_text())
    assert meta["post_training"] is True and meta["strategy"] == "combined"
    assert meta["source_checkpoint"].endswith("best")
    assert meta["reset"] == {"optimizer": False, "scheduler": False, "step": False}


def test_reset_flags_choose_what_carries_over(post_train, base_run, tmp_path):
    source = torch.load(base_run / "best" / "trainer_state.pt", weights_only=True)
    kept = tmp_path / "kept"
    post_train(kept, "--max-steps", "4", "--warmup-steps", "2")
    fresh = tmp_path / "fresh"
    post_train(fresh, "--max-steps", "4", "--warmup-steps", "2", "--reset-optimizer", "--reset-scheduler",
               "--reset-step")
    kept_state = torch.load(kept / "final" / "trainer_state.pt", weights_only=True)
    fresh_state = torch.load(fresh / "final" / "trainer_state.pt", weights_only=True)
    assert kept_state["train_state"]["step"] == 16 and fresh_state["train_state"]["step"] == 4
    assert kept_state["scheduler"]["step"] == 16 and fresh_state["scheduler"]["step"] == 4
    assert json.loads((fresh / "final" / "meta.json").read_text())["reset"] == {
        "optimizer": True, "scheduler": True, "step": True}
    # Adam's step count per tensor: 12 source steps + 4 when continued, 4 when reset.
    some = next(iter(source["optimizer"]["state"]))
    assert float(source["optimizer"]["state"][some]["step"]) == 12
    assert float(kept_state["optimizer"]["state"][some]["step"]) == 16
    assert float(fresh_state["optimizer"]["state"][some]["step"]) == 4
    # A continued schedule is past its warmup; a reset one starts warming up again.
    kept_lr = records(kept, split="train")[0]["lr"]
    fresh_lr = records(fresh, split="train")[0]["lr"]
    assert fresh_lr == pytest.approx(1e-3 / 2) and kept_lr != fresh_lr


def test_checkpoint_resolution_order(post_train, base_run, tmp_path):
    env_run = post_train(tmp_path / "env", "--max-steps", "1", checkpoint=False, check=False,
                         env={"CHECKPOINT_PATH": str(base_run), "TEMPERING_CACHE_DIR": str(tmp_path / "c1")})
    assert env_run.returncode == 0 and "CHECKPOINT_PATH=" in env_run.stderr
    bad = post_train(tmp_path / "bad", "--max-steps", "1", checkpoint=False, check=False,
                     env={"CHECKPOINT_PATH": str(tmp_path / "nowhere"), "TEMPERING_CACHE_DIR": str(tmp_path / "c2")})
    assert_user_error(bad, "CHECKPOINT_PATH", "nowhere")
    from_config = post_train(tmp_path / "cfg", "--max-steps", "1", f"checkpoint.source_path={base_run.parent}/{{run_name}}",
                             "run.name=run", checkpoint=False)
    assert "checkpoint.source_path" in from_config.stderr
    # Every finished run records itself in the cache; the next post-train picks it up.
    cache = tmp_path / "cache"
    from_cache = post_train(tmp_path / "cached", "--max-steps", "1", checkpoint=False)
    assert "recorded in" in from_cache.stderr and str(tmp_path / "cfg") in from_cache.stderr
    assert json.loads((cache / "last_run.json").read_text())["save_dir"] == str((tmp_path / "cached").resolve())


def test_strategies_decide_which_windows_are_trained(workspace, base_run):
    from tempering.checkpoint.io import load_checkpoint
    from tempering.tokenizer import load_tokenizer
    from tempering.training.post_train import build_post_train_data

    tokenizer = load_tokenizer(workspace / "tok")
    source = load_checkpoint(base_run)
    common = [f"data.datasets=[{{path: {workspace / 'code_shards'}}}]", "data.seq_len=32", "training.batch_size=4",
              "stage=post_train"]

    def windows(strategy, *extra):
        config = load_config(None, [*common, f"data.strategy={strategy}", *extra])
        batches, val_sets = build_post_train_data(config, tokenizer, 512, source)
        rows = np.concatenate([batches.batch(g)["tokens"] for g in range(batches.batches_per_epoch)])
        return rows, val_sets

    from tempering.data.shards import TokenShards

    old_tokens = TokenShards(workspace / "shards", "train").read(0, 33 * 3)
    new_tokens = TokenShards(workspace / "code_shards", "train")
    new_only, val_sets = windows("new_only")
    assert set(val_sets) == {"val:new", "val:original"}  # original rebuilt from the base run's config.yaml
    starts = {tuple(new_tokens.read(i * 32, 33).tolist()) for i in range((new_tokens.num_tokens - 1) // 32)}
    assert all(tuple(row.tolist()) in starts for row in new_only)

    appended, _ = windows("append", f"data.old_datasets=[{{path: {workspace / 'shards'}}}]")
    for i in range(3):  # old windows first, in order
        assert appended[i].tolist() == old_tokens[i * 32:i * 32 + 33].tolist()
    assert tuple(appended[-1].tolist()) in starts

    weighted, _ = windows("combined", f"data.old_datasets=[{{path: {workspace / 'shards'}, weight: 0.1}}]",
                          "data.datasets.0.weight=1.0")
    from_new = sum(tuple(row.tolist()) in starts for row in weighted)
    old_count = len(weighted) - from_new
    expected_old = round(0.1 * ((TokenShards(workspace / "shards", "train").num_tokens - 1) // 32))
    assert abs(old_count - expected_old) <= 4  # the epoch's last partial batch is dropped


def test_freezing_groups_and_progressive_unfreezing(post_train, base_run, tmp_path):
    source = load_file(base_run / "best" / "model.safetensors")
    frozen = tmp_path / "frozen"
    post_train(frozen, "--max-steps", "3", "--reset-optimizer", "training.freeze=[model.layers.0.*]")
    after = load_file(frozen / "final" / "model.safetensors")
    for name in source:
        same = torch.equal(source[name], after[name])
        assert same == name.startswith("model.layers.0."), name
    state = torch.load(frozen / "final" / "trainer_state.pt", weights_only=True)
    assert len(state["optimizer"]["state"]) == sum(1 for n in source if not n.startswith("model.layers.0."))

    grouped = tmp_path / "grouped"
    post_train(grouped, "--max-steps", "2", "--reset-optimizer", "--reset-scheduler", "--lr-schedule", "constant",
               "training.lr_groups={model.layers.1.*: 0.01}")
    groups = torch.load(grouped / "final" / "trainer_state.pt", weights_only=True)["optimizer"]["param_groups"]
    assert {round(g["lr"], 8) for g in groups} == {0.001, 0.01}
    assert {round(g["lr"] / g["lr_scale"], 8) for g in groups} == {0.001}

    gradual = tmp_path / "gradual"
    post_train(gradual, "--max-steps", "8", "--save-steps", "4", "--reset-step", "--reset-scheduler",
               "training.unfreeze_top_blocks=1", "training.unfreeze_every_steps=4", "training.save_total_limit=2")
    at4 = load_file(gradual / "checkpoints" / "step-00000004" / "model.safetensors")
    at8 = load_file(gradual / "checkpoints" / "step-00000008" / "model.safetensors")
    layer0 = [n for n in source if n.startswith("model.layers.0.")]
    assert all(torch.equal(source[n], at4[n]) for n in layer0)  # frozen for steps 1-4
    assert not any(torch.equal(source[n], at8[n]) for n in layer0 if "norm" not in n)  # open from step 5
    assert not torch.equal(source["model.layers.1.mlp.up_proj.weight"], at4["model.layers.1.mlp.up_proj.weight"])


def test_injected_nan_recovers_and_max_recoveries_zero_fails_cleanly(post_train, tmp_path):
    run = tmp_path / "nan"
    post_train(run, "--max-steps", "6", "--save-steps", "2", "debug.inject_nan_at_step=16")
    (event,) = records(run, event="recovery")
    assert event["step"] == 16 and event["restored_step"] == 14
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recoveries"] == 1 and summary["final_step"] == 18
    assert all(math.isfinite(r["loss"]) for r in records(run, split="train"))

    failing = tmp_path / "fail"
    result = post_train(failing, "--max-steps", "6", "--save-steps", "2", "debug.inject_nan_at_step=16",
                        "training.max_recoveries=0", check=False)
    assert_user_error(result, "non-finite loss", "max_recoveries")
    assert load_file(failing / "checkpoints" / "step-00000014" / "model.safetensors")
    assert not (failing / "final").exists()


def test_killed_post_training_resumes_bit_identically(post_train, workspace, base_run, tmp_path):
    args = ["--max-steps", "10", "--save-steps", "3", "--eval-steps", "5"]
    reference = tmp_path / "reference"
    post_train(reference, *args)
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "tempering", "post-train", "--checkpoint", str(base_run), "--new-dataset",
               str(workspace / "code_shards"), "--save-dir", str(run), "--seq-len", "32", "--batch-size", "4",
               "--lr", "1e-3", "training.eval_max_batches=4", "training.log_steps=1", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TEMPERING_CACHE_DIR": str(tmp_path / "cache")})
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if reached(lambda: any(r["step"] >= 17 for r in records(run, split="train"))):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL
    resumed = post_train(run, *args)
    assert "resuming from" in resumed.stderr and "source checkpoint" in resumed.stderr
    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert [(r["step"], r["loss"]) for r in records(run, split="train")] == \
        [(r["step"], r["loss"]) for r in records(reference, split="train")]

"""LoRA through the real CLI: adapter-only periodic checkpoints peft loads, merged best/final, resume, DPO."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from tempering.checkpoint.model_loading import load_model
from tempering.tracking.metrics import read_metrics
from tests.conftest import assert_user_error, run_temper

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def post_train_lora(base_run, workspace, save_dir, *extra, check=True):
    return run_temper("post-train", "--checkpoint", base_run, "--new-dataset", workspace / "code_shards",
                      "--save-dir", save_dir, "--seq-len", "32", "--batch-size", "4", "--lr", "1e-2",
                      "--lora-r", "4", "--lora-alpha", "16", "--reset-scheduler", "training.eval_max_batches=2", "training.log_steps=1",
                      *extra, check=check)


def test_peft_loads_the_periodic_adapter_and_final_holds_the_merged_model(base_run, workspace, tmp_path):
    run = tmp_path / "lora"
    post_train_lora(base_run, workspace, run, "--max-steps", "4", "--save-steps", "4")
    periodic = run / "checkpoints" / "step-00000016"  # the step counter continues from the base's 12
    assert not (periodic / "model.safetensors").exists()
    assert (periodic / "adapter_model.safetensors").is_file() and (periodic / "trainer_state.pt").is_file()
    final = run / "final"
    assert not (final / "adapter_model.safetensors").exists()  # never beside the weights
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    ids = torch.randint(0, 512, (2, 30), generator=torch.Generator().manual_seed(0))
    base = transformers.AutoModelForCausalLM.from_pretrained(base_run / "best")
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(base, periodic).eval()(ids).logits
        merged = transformers.AutoModelForCausalLM.from_pretrained(final).eval()(ids).logits
        ours = load_model(periodic).model(ids)  # base + adapter, merged on load
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged, theirs, atol=1e-5, rtol=0)
    with torch.no_grad():  # peft wrapped `base` in place: compare with a fresh copy
        untouched = transformers.AutoModelForCausalLM.from_pretrained(base_run / "best").eval()(ids).logits
    assert (theirs - untouched).abs().max() > 1e-3  # the adapter did train
    # Only the adapters trained: the merged weights differ from the base only where adapters sit.
    before, after = load_file(base_run / "best" / "model.safetensors"), load_file(final / "model.safetensors")
    changed = sorted(name for name in before if not torch.equal(before[name], after[name]))
    assert changed and all(name.split(".")[-2].endswith("_proj") for name in changed)


def test_a_killed_lora_run_resumes_bit_identically(base_run, workspace, tmp_path):
    args = ["--max-steps", "6", "--save-steps", "2"]
    reference = tmp_path / "reference"
    post_train_lora(base_run, workspace, reference, *args)
    run = tmp_path / "killed"
    died = post_train_lora(base_run, workspace, run, *args, "debug.kill_during_save_at_step=16", check=False)
    assert died.returncode == -signal.SIGKILL
    post_train_lora(base_run, workspace, run, *args)
    for name in ("final/model.safetensors", "final/adapter/adapter_model.safetensors"):
        ours, theirs = load_file(run / name), load_file(reference / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[n], theirs[n]) for n in ours), name

    def losses(path):
        return [(r["step"], r["loss"]) for r in read_metrics(path / "metrics.jsonl") if r.get("split") == "train"]

    assert losses(run) == losses(reference) and len(losses(run)) == 6


def test_dpo_with_lora_uses_the_base_as_reference(base_run, workspace, tmp_path):
    run = tmp_path / "dpo"
    run_temper("dpo", "--checkpoint", base_run, "--data", workspace / "corpus" / "chat" / "preference_train.jsonl",
               "--save-dir", run, "--seq-len", "128", "--batch-size", "2", "--max-steps", "3", "--lr", "1e-2",
               "--lora-r", "4", "training.eval_max_batches=1", "training.log_steps=1", check=True)
    meta = json.loads((run / "final" / "meta.json").read_text())
    assert meta["reference"] == "base (LoRA adapters off)"
    first = next(r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "train")
    # Step 1: the adapters start at zero, so the policy is the reference and every reward is 0.
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_lora_on_fresh_weights_is_refused(workspace, tmp_path):
    result = run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok",
                        "--save-dir", tmp_path / "run", "--preset", "tiny", "--max-steps", "2", "lora.r=4")
    assert_user_error(result, "LoRA adapts an existing model", "post-train --checkpoint")
    assert not (tmp_path / "run").exists()

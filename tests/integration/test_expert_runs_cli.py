"""Sequential expert runs through the real CLI: one expert per domain, merge, a router-only phase."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import assert_user_error, run_temper

EXPERTS = ["--preset", "moe_tiny", "model.n_experts=2", "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3",
           "--max-steps", "4", "training.eval_max_batches=2"]


def expert_run(workspace, save_dir, expert_dir, index, data, *extra, check=True):
    return run_temper("pretrain", "--data", data, "--tokenizer", workspace / "tok", "--save-dir", save_dir,
                      "--active-expert", str(index), "--expert-checkpoint-dir", expert_dir, *EXPERTS, *extra,
                      check=check)


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_experts_train_one_at_a_time_then_merge_and_a_router_phase_teaches_the_router(workspace, tmp_path):
    experts = tmp_path / "experts"
    expert_run(workspace, tmp_path / "e0", experts, 0, workspace / "shards")
    first = load_file(tmp_path / "e0" / "final" / "model.safetensors")
    second_run = expert_run(workspace, tmp_path / "e1", experts, 1, workspace / "code_shards", "--freeze-shared")
    assert "loaded shared.safetensors, expert_0.safetensors" in " ".join((second_run.stdout + second_run.stderr).split())
    second = load_file(tmp_path / "e1" / "final" / "model.safetensors")
    # The expert-1 run changed expert 1 only: expert 0, routers and shared weights are bit-identical.
    assert changed(first, second) and all(".experts.1." in name for name in changed(first, second))
    saved_0 = load_file(experts / "expert_0.safetensors")
    assert saved_0.keys() == {n for n in first if ".experts.0." in n}
    assert all(torch.equal(saved_0[n], second[n]) for n in saved_0)
    manifest = json.loads((experts / "experts.json").read_text())
    assert set(manifest["experts"]) == {"0", "1"} and manifest["shared"]["expert"] == 1

    merged = tmp_path / "merged"
    run_temper("merge-experts", "--expert-checkpoint-dir", experts, "--output", merged, check=True)
    assert all(torch.equal(t, second[n]) for n, t in load_file(merged / "model.safetensors").items())
    router = tmp_path / "router"
    run_temper("post-train", "--checkpoint", merged, "--new-dataset", workspace / "shards", workspace / "code_shards",
               "--save-dir", router, "--train-only", "router", "--seq-len", "32", "--batch-size", "4",
               "--max-steps", "3", "--lr", "1e-2", "training.eval_max_batches=2", "model.router_aux_loss_coef=0",
               check=True)
    assert json.loads((router / "final" / "config.json").read_text())["router_aux_loss_coef"] == 0
    after = load_file(router / "final" / "model.safetensors")
    assert changed(second, after) == {f"model.layers.{i}.block_sparse_moe.gate.weight" for i in range(2)}
    transformers = pytest.importorskip("transformers")
    assert type(transformers.AutoModelForCausalLM.from_pretrained(router / "final")).__name__ == "MixtralForCausalLM"


def test_expert_run_mistakes_are_one_line_errors_and_write_nothing(workspace, tmp_path):
    experts = tmp_path / "experts"
    assert_user_error(expert_run(workspace, tmp_path / "a", experts, 2, workspace / "shards", check=False),
                      "training.active_expert is 2, but the model's experts are 0-1")
    result = run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir",
                        tmp_path / "b", "--preset", "tiny", "--active-expert", "0", "--max-steps", "2")
    assert_user_error(result, "training.active_expert needs a mixture-of-experts model")
    result = run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir",
                        tmp_path / "c", *EXPERTS, "--expert-checkpoint-dir", experts)
    assert_user_error(result, "--expert-checkpoint-dir is for sequential expert runs: give --active-expert I too")
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c", "experts"))
    expert_run(workspace, tmp_path / "e0", experts, 0, workspace / "shards")
    assert_user_error(run_temper("merge-experts", "--expert-checkpoint-dir", experts, "--output", tmp_path / "m"),
                      "lacks expert_1.safetensors; train it with --active-expert 1 first")
    assert not (tmp_path / "m").exists()

"""The moe family end to end through the real CLI: pretrain (router metrics, Mixtral export, crash and NaN
safety), generate, SFT and DPO on an MoE base, `temper import` of a Mixtral directory, and a model with a
shared expert (Qwen2-MoE export and import)."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from tempering.tracking.metrics import read_metrics
from tests.conftest import run_temper

MOE_RUN = ["--preset", "moe_tiny", "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3", "--warmup-steps", "2",
           "training.eval_max_batches=2", "training.log_steps=1"]


@pytest.fixture
def moe_pretrain(workspace):
    """Run `temper pretrain --preset moe_tiny` on the workspace's prose shards."""

    def run(save_dir, *extra, check=True):
        return run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok",
                          "--save-dir", save_dir, *MOE_RUN, *extra, check=check)

    return run


@pytest.fixture(scope="module")
def moe_base(workspace, tmp_path_factory):
    """A moe_tiny model pretrained for a few steps: the source of the chat-stage tests."""
    run = tmp_path_factory.mktemp("moe_base") / "run"
    run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", run,
               *MOE_RUN, "--max-steps", "6", check=True)
    return run


def train_records(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "train"]


def assert_router_metrics(record, num_experts=4):
    loads = [record[f"moe/load/expert_{j}"] for j in range(num_experts)]
    masses = [record[f"moe/router_prob/expert_{j}"] for j in range(num_experts)]
    assert sum(loads) == pytest.approx(1.0) and sum(masses) == pytest.approx(1.0)
    assert record["moe/aux_loss"] >= 2.0 - 1e-4  # top-2 balancing loss is at least k
    assert record["moe/z_loss"] > 0 and record["auxiliary_loss"] > 0


def test_every_train_line_has_router_metrics_and_final_loads_as_mixtral(moe_pretrain, workspace, tmp_path):
    run = tmp_path / "run"
    moe_pretrain(run, "--max-steps", "4")
    records = train_records(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert_router_metrics(record)
    transformers = pytest.importorskip("transformers")
    from tempering.checkpoint.model_loading import load_model

    ours = load_model(run / "final").model
    theirs = transformers.AutoModelForCausalLM.from_pretrained(run / "final").eval()
    assert type(theirs).__name__ == "MixtralForCausalLM"
    ids = torch.tensor([transformers.AutoTokenizer.from_pretrained(run / "final")("def main():\n    return 1")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-5, rtol=0)
    generated = run_temper("generate", "--checkpoint", run, "--prompt", "The", "--temperature", "0",
                           "--max-new-tokens", "8", check=True)
    assert generated.stdout.startswith("The")


def test_a_shared_expert_run_saves_a_qwen2_moe_checkpoint_that_loads_and_imports_back(moe_pretrain, tmp_path):
    transformers = pytest.importorskip("transformers")
    from tempering.checkpoint.hf_import import import_hf_model
    from tempering.checkpoint.model_loading import load_model

    run = tmp_path / "run"
    moe_pretrain(run, "--max-steps", "2", "model.shared_expert_d_ff=32")
    assert_router_metrics(train_records(run)[-1])
    config = json.loads((run / "final" / "config.json").read_text())
    assert (config["model_type"], config["shared_expert_intermediate_size"]) == ("qwen2_moe", 32)
    ours = load_model(run / "final").model
    theirs = transformers.AutoModelForCausalLM.from_pretrained(run / "final").eval()
    assert type(theirs).__name__ == "Qwen2MoeForCausalLM"
    ids = torch.randint(0, config["vocab_size"], (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-5, rtol=0)
    hf_dir = tmp_path / "hf"
    theirs.save_pretrained(hf_dir)
    transformers.AutoTokenizer.from_pretrained(run / "final").save_pretrained(hf_dir)
    assert import_hf_model(hf_dir, tmp_path / "imported")["model_type"] == "qwen2_moe"
    imported = load_file(tmp_path / "imported" / "model.safetensors")
    original = load_file(run / "final" / "model.safetensors")
    assert "model.layers.1.mlp.shared_expert.down_proj.weight" in original
    assert imported.keys() == original.keys() and all(torch.equal(imported[n], original[n]) for n in original)


def test_a_run_killed_while_saving_resumes_bit_identically_and_nan_rolls_back(moe_pretrain, tmp_path):
    args = ["--max-steps", "8", "--save-steps", "3"]
    reference = tmp_path / "reference"
    moe_pretrain(reference, *args)
    run = tmp_path / "killed"
    died = moe_pretrain(run, *args, "debug.kill_during_save_at_step=6", check=False)
    assert died.returncode == -signal.SIGKILL
    moe_pretrain(run, *args)
    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert [(r["step"], r["loss"], r["moe/aux_loss"]) for r in train_records(run)] == \
        [(r["step"], r["loss"], r["moe/aux_loss"]) for r in train_records(reference)]

    poisoned = tmp_path / "nan"
    moe_pretrain(poisoned, *args, "debug.inject_nan_at_step=5")
    events = [r for r in read_metrics(poisoned / "metrics.jsonl") if r.get("event") == "recovery"]
    assert [(e["step"], e["restored_step"]) for e in events] == [(5, 3)]
    final = load_file(poisoned / "final" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values())
    assert json.loads((poisoned / "summary.json").read_text())["final_step"] == 8


def test_sft_and_dpo_train_an_moe_base_with_its_router_losses(moe_base, workspace, tmp_path):
    chat = workspace / "corpus" / "chat"
    for command, data in (("sft", chat / "chat_train.jsonl"), ("dpo", chat / "preference_train.jsonl")):
        run = tmp_path / command
        run_temper(command, "--checkpoint", moe_base, "--data", data, "--save-dir", run, "--seq-len", "128",
                   "--batch-size", "2", "--max-steps", "2", "training.eval_max_batches=1", "training.log_steps=1",
                   check=True)
        for record in train_records(run):
            assert_router_metrics(record)
        assert json.loads((run / "final" / "meta.json").read_text())["family"] == "moe"
        assert json.loads((run / "final" / "config.json").read_text())["model_type"] == "mixtral"


def test_import_reads_a_mixtral_directory_that_transformers_saved(moe_base, workspace, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "hf"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(moe_base / "final")
    theirs.save_pretrained(hf_dir)
    transformers.AutoTokenizer.from_pretrained(moe_base / "final").save_pretrained(hf_dir)
    run_temper("import", "--from", hf_dir, "--output", tmp_path / "imported", check=True)
    meta = json.loads((tmp_path / "imported" / "meta.json").read_text())
    assert (meta["family"], meta["model_type"]) == ("moe", "mixtral")
    imported = load_file(tmp_path / "imported" / "model.safetensors")
    original = load_file(moe_base / "final" / "model.safetensors")
    assert imported.keys() == original.keys() and all(torch.equal(imported[n], original[n]) for n in original)


def test_presets_lists_total_and_active_parameters():
    result = run_temper("presets", check=True)
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    for name, total, active in (("mac_nano", "182.85M", "96.15M"), ("expert_75m", "479.28M", "198.53M"),
                                ("dense_75m", "73.68M", "73.68M"), ("moe_tiny", "0.19M", "0.14M")):
        assert total in rows[name] and active in rows[name], rows.get(name)

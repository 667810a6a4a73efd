"""The moe family's optional shared expert against transformers' Qwen2-MoE: names, counts, configs both ways,
and what expert runs and LoRA make of it (logits and router losses: test_models_moe.py's qwen2_moe cases)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tempering.config.schema import LoraConfig, TrainingConfig
from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds
from tempering.models.llama import LLAMA
from tempering.models.moe import MOE
from tempering.models.moe.architecture import (
    MoeArchitecture,
    count_active_parameters,
    count_parameters,
)
from tempering.models.moe.hf_config import from_hf_config, to_hf_config
from tempering.models.moe.model import MoeDecoderLM
from tempering.training.expert_runs import split_expert_weights
from tempering.training.trainable import frozen_by_config

transformers = pytest.importorskip("transformers")

SPECIAL = SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0)
SHARED_PARTS = ("mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight",
                "mlp.shared_expert.down_proj.weight", "mlp.shared_expert_gate.weight")


def make_arch(**overrides) -> MoeArchitecture:
    dims = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, n_experts=4,
                max_seq_len=64, experts_per_token=2, shared_expert_d_ff=40)
    return MoeArchitecture(**{**dims, **overrides})


def build(arch: MoeArchitecture, seed: int = 0) -> MoeDecoderLM:
    torch.manual_seed(seed)
    return MoeDecoderLM(arch).eval()


def save_ours(model: MoeDecoderLM, directory):
    save_file(model.export_state_dict(), directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(to_hf_config(model.arch, special=SPECIAL)))


def test_shared_expert_names_and_config_round_trip_through_transformers(tmp_path):
    # Logits parity and what transformers re-saves: test_models_moe.py, its shared-expert case.
    arch = make_arch()
    ours = build(arch)
    exported = {name: tuple(t.shape) for name, t in ours.export_state_dict().items()}
    for layer in range(arch.n_layers):
        for part in SHARED_PARTS:
            assert f"model.layers.{layer}.{part}" in exported
    assert exported[f"model.layers.0.{SHARED_PARTS[0]}"] == (arch.shared_expert_d_ff, arch.d_model)
    assert exported["model.layers.0.mlp.shared_expert_gate.weight"] == (1, arch.d_model)
    assert not any("block_sparse_moe" in name or name.endswith(".w1.weight") for name in exported)
    save_ours(ours, tmp_path)
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path).save_pretrained(tmp_path / "resaved")
    config = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert (config["model_type"], config["norm_topk_prob"], config["qkv_bias"]) == ("qwen2_moe", True, False)
    assert from_hf_config(config) == arch
    assert MOE.model_type(arch) == "qwen2_moe"


def test_without_a_shared_expert_the_model_stays_mixtral():
    arch = make_arch(shared_expert_d_ff=0)
    names = MOE.expected_tensors(arch)
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in names
    assert not any("shared_expert" in name or ".mlp." in name for name in names)
    config = to_hf_config(arch, special=SPECIAL)
    assert (config["model_type"], MOE.model_type(arch)) == ("mixtral", "mixtral")
    assert "shared_expert_intermediate_size" not in config and from_hf_config(config) == arch


def test_counts_add_the_shared_expert_to_the_total_and_to_every_tokens_active_parameters():
    with_shared, without = make_arch(), make_arch(shared_expert_d_ff=0)
    per_layer = 3 * 64 * 40 + 64  # gate, up, down of width 40, and the (1, 64) gate
    assert count_parameters(with_shared) - count_parameters(without) == 2 * per_layer
    assert count_active_parameters(with_shared) - count_active_parameters(without) == 2 * per_layer


def test_every_token_goes_through_the_shared_expert_even_in_an_expert_run():
    model = build(make_arch())
    input_ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    for forced in (None, 1):
        model.route_every_token_to(forced)
        with torch.no_grad():
            before = model(input_ids)
            saved = [layer.mlp.shared_expert.down_proj.weight.clone() for layer in model.model.layers]
            for layer in model.model.layers:
                layer.mlp.shared_expert.down_proj.weight.zero_()
            after = model(input_ids)
            for layer, weight in zip(model.model.layers, saved, strict=True):
                layer.mlp.shared_expert.down_proj.weight.copy_(weight)
        assert ((before - after).abs().amax(dim=-1) > 1e-6).all()  # at every position


def test_kv_cached_decoding_matches_the_full_forward():
    model = build(make_arch(), seed=2)
    input_ids = torch.randint(0, 256, (1, 12))
    cache = model.new_kv_cache(1, 20)
    with torch.no_grad():
        full = model(input_ids)
        steps = [model(input_ids[:, :8], kv_cache=cache)]
        steps += [model(input_ids[:, i:i + 1], kv_cache=cache) for i in range(8, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_the_width_is_a_model_key_that_must_not_be_negative():
    arch = MOE.architecture("moe_tiny", {"shared_expert_d_ff": 32})
    assert arch.shared_expert_d_ff == 32 and MOE.presets["moe_tiny"].shared_expert_d_ff == 0
    with pytest.raises(UserError, match=r"model.shared_expert_d_ff must be 0 \(off\) or positive, got -1"):
        MOE.architecture("moe_tiny", {"shared_expert_d_ff": -1})
    with pytest.raises(UserError, match="model.shared_expert_d_ff is not a dimension of the llama family"):
        LLAMA.architecture("tiny", {"shared_expert_d_ff": 32})


@pytest.mark.parametrize(("change", "named"), [
    ({"qkv_bias": True}, "qkv_bias is true"),
    ({"qkv_bias": None}, "qkv_bias is true"),  # None: the key is dropped, transformers' default applies
    ({"norm_topk_prob": False}, "norm_topk_prob is false"),
    ({"mlp_only_layers": [1]}, r"mlp_only_layers is \[1\]"),
    ({"decoder_sparse_step": 2}, "decoder_sparse_step is 2"),
    ({"use_sliding_window": True}, "use_sliding_window is true"),
    ({"shared_expert_intermediate_size": 0}, "shared_expert_intermediate_size is 0"),
    ({"moe_intermediate_size": None}, "config has no 'moe_intermediate_size', which a qwen2_moe model needs"),
])
def test_qwen2_moe_configs_it_cannot_reproduce_are_refused_by_key(change, named):
    config = {**to_hf_config(make_arch(), special=SPECIAL), **change}
    config = {key: value for key, value in config.items() if value is not None}
    with pytest.raises(UserError, match=named):
        from_hf_config(config, where="m/config.json")


def test_expert_runs_keep_the_shared_expert_with_the_shared_weights():
    arch = make_arch()
    weights = {name: torch.zeros(shape) for name, shape in MOE.expected_tensors(arch).items()}
    expert, shared = split_expert_weights(weights, MOE.layout, 1)
    assert expert and all(".mlp.experts.1." in name for name in expert)
    assert len(expert) == 3 * arch.n_layers
    for layer in range(arch.n_layers):
        assert {f"model.layers.{layer}.{part}" for part in SHARED_PARTS} <= set(shared)
        assert f"model.layers.{layer}.mlp.gate.weight" in shared  # the router is shared too
    assert not any(".experts." in name for name in shared)


@pytest.mark.parametrize("freeze_shared", [False, True])
def test_an_expert_run_freezes_the_shared_expert_only_with_freeze_shared(freeze_shared):
    model = build(make_arch())
    frozen = frozen_by_config(model, TrainingConfig(active_expert=0, freeze_shared=freeze_shared), MOE.layout)
    trainable = {name for name, _ in model.named_parameters()} - frozen
    routers = {f"model.layers.{i}.mlp.gate.weight" for i in range(2)}
    shared_expert = {f"model.layers.{i}.{part}" for i in range(2) for part in SHARED_PARTS}
    assert routers <= frozen
    assert (shared_expert <= frozen) if freeze_shared else (shared_expert <= trainable)
    assert all(".mlp.experts.0." in name for name in trainable) == freeze_shared


def test_router_only_training_leaves_the_shared_expert_gate_alone():
    model = build(make_arch())
    frozen = frozen_by_config(model, TrainingConfig(train_only=["router"]), MOE.layout)
    trainable = {name for name, _ in model.named_parameters()} - frozen
    assert trainable == {f"model.layers.{i}.mlp.gate.weight" for i in range(2)}


def test_default_lora_targets_take_the_shared_expert_like_the_routed_ones_and_peft_loads_it_on_qwen2_moe(tmp_path):
    peft = pytest.importorskip("peft")
    from tempering.training.lora import apply_lora, merged_state_dict

    arch = make_arch(vocab_size=128)
    ours = build(arch, seed=3)
    save_ours(ours, tmp_path)
    adapter = apply_lora(build(arch, seed=3), LoraConfig(r=4), base_checkpoint=None)
    layer = "model.layers.1.mlp"
    for part in ("gate_proj", "up_proj", "down_proj"):
        assert {f"{layer}.shared_expert.{part}", f"{layer}.experts.2.{part}"} <= set(adapter.target_names)
    assert not {f"{layer}.gate", f"{layer}.shared_expert_gate"} & set(adapter.target_names)

    # peft on transformers' Qwen2-MoE: its routed experts are fused 3-D tensors, its shared expert is plain linears.
    ours = build(arch, seed=3)
    adapter = apply_lora(ours, LoraConfig(r=4, target_modules=["q_proj", "*.shared_expert.*"]), base_checkpoint=None)
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    tensors, config = adapter.adapter_files(ours)
    (tmp_path / "adapter").mkdir()
    save_file(tensors, tmp_path / "adapter" / "adapter_model.safetensors")
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    input_ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(input_ids).logits
        torch.testing.assert_close(ours.eval()(input_ids), theirs, atol=1e-5, rtol=0)
        plain = MoeDecoderLM(arch)
        plain.load_exported_state_dict(merged_state_dict(ours))
        torch.testing.assert_close(plain.eval()(input_ids), theirs, atol=1e-5, rtol=0)

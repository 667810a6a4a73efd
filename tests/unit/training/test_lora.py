"""LoRA through peft on our models: targets, merging, the adapter-disabled reference, the trainable rules."""

from __future__ import annotations

import pytest
import torch

from tempering.config.schema import Config, LoraConfig
from tempering.errors import UserError
from tempering.models.llama import LLAMA
from tempering.models.llama.architecture import PRESETS
from tempering.models.llama.model import DecoderLM
from tempering.models.moe.architecture import PRESETS as MOE_PRESETS
from tempering.models.moe.model import MoeDecoderLM
from tempering.training.lora import AdapterDisabledReference, apply_lora, merged_state_dict
from tempering.training.preference import sequence_logps
from tempering.training.trainable import frozen_by_config

pytest.importorskip("peft")


def lora_model(build, arch, **settings):
    torch.manual_seed(0)
    model = build(arch)
    base = build(arch)
    base.load_state_dict(model.state_dict())
    adapter = apply_lora(model, LoraConfig(r=4, **settings), base_checkpoint=None)
    with torch.no_grad():  # peft starts B at zero; give the adapters something to merge
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    return model, base, adapter


@pytest.mark.parametrize("kind", ["llama", "moe"])
def test_merged_weights_give_the_adapter_logits_and_load_into_a_plain_model(kind):
    if kind == "llama":
        build, arch, settings = DecoderLM, PRESETS["tiny"].with_overrides(vocab_size=128), {"alpha": 16.0}
    else:  # adapters on the experts and the routers too
        build, arch = MoeDecoderLM, MOE_PRESETS["moe_tiny"].with_overrides(vocab_size=128)
        settings = {"target_modules": ["q_proj", "w1", "w2", "w3", "gate"]}
    model, _, adapter = lora_model(build, arch, **settings)
    plain = build(arch)
    plain.load_exported_state_dict(merged_state_dict(model))
    input_ids = torch.randint(0, 128, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids), model(input_ids), atol=1e-5, rtol=0)
    if kind == "moe":
        assert any(".experts.3.w2" in name for name in adapter.target_names)
        assert any(name.endswith("block_sparse_moe.gate") for name in adapter.target_names)


def test_only_the_adapters_train_and_the_reference_is_the_base_without_a_copy():
    arch = PRESETS["tiny"].with_overrides(vocab_size=128)
    model, base, _ = lora_model(DecoderLM, arch)
    frozen = frozen_by_config(model, Config().training, LLAMA.layout)
    trainable = [name for name, _ in model.named_parameters() if name not in frozen]
    assert trainable and all(".lora_" in name for name in trainable)
    reference = AdapterDisabledReference(model)
    batch = {"input_ids": torch.randint(0, 128, (2, 16)), "labels": torch.randint(0, 128, (2, 16))}
    model.train()
    with torch.no_grad():
        theirs, _ = sequence_logps(base.eval(), batch)
        ours, _ = sequence_logps(reference, batch)
        adapted, _ = sequence_logps(model.eval(), batch)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert not torch.allclose(adapted, theirs)  # the adapters are back on afterwards
    assert all(p.requires_grad for name, p in model.named_parameters() if ".lora_" in name)
    assert sum(p.numel() for p in model.parameters()) < 1.2 * sum(p.numel() for p in base.parameters())


@pytest.mark.parametrize(("patterns", "named"), [
    (["lm_head"], "the output head cannot take an adapter"),
    (["qq_proj"], "pattern 'qq_proj' matches no linear layer"),
])
def test_targets_that_cannot_work_are_refused_by_pattern(patterns, named):
    model = DecoderLM(PRESETS["tiny"].with_overrides(vocab_size=128))
    with pytest.raises(UserError, match=named):
        apply_lora(model, LoraConfig(r=2, target_modules=patterns), base_checkpoint=None)


def test_dotted_patterns_select_full_names():
    model = DecoderLM(PRESETS["tiny"].with_overrides(vocab_size=128))
    adapter = apply_lora(model, LoraConfig(r=2, target_modules=["model.layers.1.*_proj"]), base_checkpoint=None)
    assert adapter.target_names == [f"model.layers.1.{part}" for part in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]

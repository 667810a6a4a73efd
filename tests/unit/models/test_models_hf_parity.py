"""Our decoder against Hugging Face `LlamaForCausalLM`: names, counts, logits, save/load."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tempering.config.presets import count_parameters
from tempering.errors import UserError
from tempering.models import DecoderLM
from tempering.models.hf import from_hf_config, to_hf_config

transformers = pytest.importorskip("transformers")


def _hf_model(arch):
    config = transformers.LlamaConfig(**to_hf_config(arch, bos_id=1, eos_id=2, pad_id=0))
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tie", [False, True])
def test_parameter_names_and_count_match_hf(make_arch, tie):
    arch = make_arch(tie_embeddings=tie)
    ours = DecoderLM(arch)
    assert list(ours.state_dict()) == list(_hf_model(arch).state_dict())
    assert sum(p.numel() for p in ours.parameters()) == count_parameters(arch)


@pytest.mark.parametrize("overrides", [
    dict(tie_embeddings=False, n_kv_heads=2),
    dict(tie_embeddings=True, n_kv_heads=4, rope_theta=500000.0, norm_eps=1e-6),
    dict(n_kv_heads=1),
])
def test_logits_equal_hf_with_copied_weights(make_arch, overrides):
    arch = make_arch(**overrides)
    torch.manual_seed(0)
    ours = DecoderLM(arch).eval()
    theirs = _hf_model(arch)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    input_ids = torch.randint(0, arch.vocab_size, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids), theirs(input_ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("tie", [False, True])
def test_saved_checkpoint_loads_in_auto_model(make_arch, tmp_path, tie):
    arch = make_arch(tie_embeddings=tie)
    torch.manual_seed(1)
    ours = DecoderLM(arch).eval()
    save_file(ours.export_state_dict(), tmp_path / "model.safetensors")
    config = to_hf_config(arch, bos_id=1, eos_id=2, pad_id=0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    theirs, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == "LlamaForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    if tie:
        assert theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()
    input_ids = torch.randint(0, arch.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids), theirs.eval()(input_ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("tie", [False, True])
def test_hf_saved_weights_load_into_ours(make_arch, tmp_path, tie):
    arch = make_arch(tie_embeddings=tie)
    torch.manual_seed(2)
    theirs = _hf_model(arch)
    theirs.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert from_hf_config(config) == arch
    ours = DecoderLM(from_hf_config(config)).eval()
    ours.load_exported_state_dict(load_file(tmp_path / "model.safetensors"))
    input_ids = torch.randint(0, arch.vocab_size, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids), theirs(input_ids).logits, atol=1e-4, rtol=0)


def test_config_round_trips_through_llama_config(make_arch):
    arch = make_arch(rope_theta=500000.0, tie_embeddings=True, norm_eps=1e-6, max_seq_len=128)
    config = to_hf_config(arch, dropout=0.1, bos_id=1, eos_id=2, pad_id=None)
    assert from_hf_config(config) == arch
    # transformers 5 writes rope_parameters instead of rope_theta; both forms must map back.
    written = transformers.LlamaConfig(**config).to_dict()
    assert from_hf_config(written) == arch
    assert written["attention_dropout"] == 0.1


@pytest.mark.parametrize(("change", "key"), [
    ({"model_type": "mistral"}, "model_type"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}, "rope_parameters.rope_type"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"head_dim": 32}, "head_dim"),
])
def test_unsupported_configs_name_the_key(make_arch, change, key):
    config = {**to_hf_config(make_arch(), bos_id=1, eos_id=2, pad_id=0), **change}
    with pytest.raises(UserError, match=key):
        from_hf_config(config, where="ckpt/config.json")


def test_missing_key_is_named(make_arch):
    config = to_hf_config(make_arch(), bos_id=1, eos_id=2, pad_id=0)
    del config["intermediate_size"]
    with pytest.raises(UserError, match="ckpt/config.json: .*intermediate_size"):
        from_hf_config(config, where="ckpt/config.json")

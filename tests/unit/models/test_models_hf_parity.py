"""Our decoder against transformers' Llama, Mistral, Qwen2 and Qwen3: names, counts, logits, configs both ways."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds
from tempering.models.llama import LLAMA
from tempering.models.llama.architecture import count_parameters, expected_tensors
from tempering.models.llama.hf_config import HF_CLASSES, from_hf_config, to_hf_config
from tempering.models.llama.model import DecoderLM

transformers = pytest.importorskip("transformers")

SPECIAL = SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0)
# Each variant as a tiny architecture: what it changes against plain Llama.
VARIANTS = {
    "llama": dict(tie_embeddings=False, n_kv_heads=2),
    "llama-tied-mqa": dict(tie_embeddings=True, n_kv_heads=1, rope_theta=500000.0, norm_eps=1e-6),
    "llama-bias": dict(attention_bias=True, attention_out_bias=True),
    "mistral": dict(hf_model_type="mistral"),
    "qwen2": dict(hf_model_type="qwen2", attention_bias=True, tie_embeddings=True, rope_theta=1e6),
    "qwen3": dict(hf_model_type="qwen3", qk_norm=True, attention_head_dim=32),
}


def hf_model(arch):
    """transformers' own class for the variant, built from our config.json."""
    config = transformers.AutoConfig.for_model(**to_hf_config(arch, special=SPECIAL))
    return getattr(transformers, HF_CLASSES[arch.hf_model_type])(config).eval()


@pytest.fixture(params=list(VARIANTS))
def arch(request, make_arch):
    return make_arch(**VARIANTS[request.param])


def test_parameter_names_count_and_expected_tensors_match_hf(arch):
    ours = DecoderLM(arch)
    theirs = hf_model(arch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == count_parameters(arch)
    exported = {name: tuple(t.shape) for name, t in ours.export_state_dict().items()}
    assert exported == expected_tensors(arch) == LLAMA.expected_tensors(arch)


def test_logits_equal_hf_with_copied_weights(arch):
    torch.manual_seed(0)
    ours = DecoderLM(arch).eval()
    with torch.no_grad():  # random biases and norm scales, so those paths are exercised too
        for name, param in ours.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    theirs = hf_model(arch)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    input_ids = torch.randint(0, arch.vocab_size, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids), theirs(input_ids).logits, atol=1e-5, rtol=0)


def test_saved_checkpoint_loads_in_auto_model_as_its_own_class(arch, tmp_path):
    torch.manual_seed(1)
    ours = DecoderLM(arch).eval()
    save_file(ours.export_state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(arch, special=SPECIAL)))
    theirs, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == HF_CLASSES[arch.hf_model_type]
    assert not info["missing_keys"] and not info["unexpected_keys"]
    if arch.tie_embeddings:
        assert theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()
    input_ids = torch.randint(0, arch.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids), theirs.eval()(input_ids).logits, atol=1e-5, rtol=0)


def test_hf_saved_weights_and_config_load_into_ours(arch, tmp_path):
    torch.manual_seed(2)
    theirs = hf_model(arch)
    theirs.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert from_hf_config(config) == arch
    ours = DecoderLM(from_hf_config(config)).eval()
    ours.load_exported_state_dict(load_file(tmp_path / "model.safetensors"))
    input_ids = torch.randint(0, arch.vocab_size, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids), theirs(input_ids).logits, atol=1e-5, rtol=0)


def test_config_round_trips_through_the_transformers_config(make_arch):
    arch = make_arch(rope_theta=500000.0, tie_embeddings=True, norm_eps=1e-6, max_seq_len=128)
    config = to_hf_config(arch, dropout=0.1, special=SpecialTokenIds(bos_id=1, eos_ids=(2, 5), pad_id=None))
    assert from_hf_config(config) == arch
    assert config["eos_token_id"] == 2  # the tokenizer's EOS; generation_config.json lists the others
    # transformers 5 writes rope_parameters instead of rope_theta; both forms must map back.
    written = transformers.LlamaConfig(**config).to_dict()
    assert from_hf_config(written) == arch
    assert written["attention_dropout"] == 0.1


def test_a_mistral_window_longer_than_the_context_is_plain_attention(make_arch):
    config = {**to_hf_config(make_arch(hf_model_type="mistral"), special=SPECIAL), "sliding_window": 4096}
    assert from_hf_config(config).hf_model_type == "mistral"


@pytest.mark.parametrize(("change", "key"), [
    ({"model_type": "gpt2"}, "model_type"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}, "rope_parameters.rope_type"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"model_type": "mistral", "sliding_window": 16}, "sliding_window"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window"),
    ({"model_type": "qwen3", "layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
])
def test_unsupported_configs_name_the_key(make_arch, change, key):
    config = {**to_hf_config(make_arch(), special=SPECIAL), **change}
    with pytest.raises(UserError, match=f"ckpt/config.json: {key}"):
        from_hf_config(config, where="ckpt/config.json")


def test_missing_key_is_named(make_arch):
    config = to_hf_config(make_arch(), special=SPECIAL)
    del config["intermediate_size"]
    with pytest.raises(UserError, match="ckpt/config.json: .*intermediate_size"):
        from_hf_config(config, where="ckpt/config.json")


@pytest.mark.parametrize(("overrides", "key"), [
    (dict(hf_model_type="qwen2"), "attention_bias"),
    (dict(hf_model_type="mistral", attention_bias=True, attention_out_bias=True), "attention_bias"),
    (dict(qk_norm=True), "qk_norm"),
    (dict(attention_bias=True), "attention_out_bias"),
])
def test_variants_refuse_switches_their_transformers_class_lacks(make_arch, overrides, key):
    with pytest.raises(UserError, match=key):
        make_arch(**overrides).check()

"""The vision captioner against transformers' LlavaForConditionalGeneration: names, config both ways, logits."""

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds
from tempering.models.vision import VISION
from tempering.models.vision.architecture import PRESETS, count_parameters
from tempering.models.vision.hf_config import from_hf_config, to_hf_config
from tempering.models.vision.model import CaptionModel

transformers = pytest.importorskip("transformers")

SPECIAL = SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0)
IMAGE_TOKEN = 3


@pytest.fixture(params=[False, True], ids=["untied", "tied"])
def arch(request, make_arch):
    return replace(PRESETS["vision_tiny"], lm=make_arch(tie_embeddings=request.param), image_token_id=IMAGE_TOKEN)


def randomised(arch) -> CaptionModel:
    """A captioner with random biases and norm scales too, so every path differs from its initial value."""
    torch.manual_seed(0)
    model = CaptionModel(arch).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    return model


def test_config_round_trips_and_unsupported_llava_settings_are_refused(arch):
    config = to_hf_config(arch, dropout=0.0, special=SPECIAL)
    assert from_hf_config(config) == arch
    with pytest.raises(UserError, match="vision_feature_layer"):
        from_hf_config({**config, "vision_feature_layer": -2})
    with pytest.raises(UserError, match="siglip_vision_model"):
        from_hf_config({**config, "vision_config": {**config["vision_config"], "model_type": "clip_vision_model"}})


def test_transformers_loads_a_saved_captioner_with_the_same_logits(arch, tmp_path):
    ours = randomised(arch)
    config = to_hf_config(arch, dropout=0.0, special=SPECIAL)
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))
    save_file(ours.export_state_dict(), tmp_path / "model.safetensors")
    theirs = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in ours.parameters()) == count_parameters(arch) == VISION.count_parameters(arch)

    pixels = torch.rand(2, 3, arch.image_size, arch.image_size) * 2 - 1
    text = torch.randint(4, arch.lm.vocab_size, (2, 12))
    hf_ids = torch.cat([torch.full((2, arch.num_patches), IMAGE_TOKEN), text], dim=1)  # LLaVA: placeholders first
    with torch.no_grad():
        expected = theirs(input_ids=hf_ids, pixel_values=pixels).logits
        got = ours(text, pixels=pixels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_kv_cached_decoding_equals_the_full_forward_pass(arch):
    model = randomised(arch)
    pixels = torch.rand(1, 3, arch.image_size, arch.image_size)
    text = torch.randint(4, arch.lm.vocab_size, (1, 6))
    with torch.no_grad():
        full = model(text, pixels=pixels)[:, -1]
        cache = model.new_kv_cache(1)
        model(text[:, :3], pixels=pixels, kv_cache=cache)
        stepped = [model(text[:, i:i + 1], kv_cache=cache)[:, -1] for i in range(3, 6)][-1]
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)

"""The vision family's conv stem (model.patch_embed: conv): shapes, names, config round trip, embedding layout."""

from dataclasses import replace

import pytest
import torch

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds
from tempering.models.vision import VISION
from tempering.models.vision.architecture import PRESETS, count_parameters, expected_tensors
from tempering.models.vision.hf_config import CONV_STEM_MODEL_TYPE, from_hf_config, to_hf_config
from tempering.models.vision.model import CaptionModel

SPECIAL = SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0)


@pytest.fixture
def stem_arch(make_arch):
    return replace(PRESETS["vision_tiny"], lm=make_arch(), image_token_id=3, patch_embed="conv")


@pytest.mark.parametrize(("patch", "widths"), [(2, [32, 24]), (4, [32, 64, 24]), (8, [32, 64, 128, 24])])
def test_the_stem_halves_the_image_down_to_the_patch_grid(stem_arch, patch, widths):
    arch = replace(stem_arch, patch_size=patch, image_size=4 * patch, d_model=24, n_heads=2)
    model = CaptionModel(arch)
    convs = [m for m in model.vision_model.embeddings.patch_embedding if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == widths
    assert [c.stride for c in convs] == [(1, 1)] + [(2, 2)] * (len(widths) - 1)
    pixels = torch.randn(2, 3, arch.image_size, arch.image_size)
    assert model.vision_model.embeddings(pixels).shape == (2, arch.num_patches, 24)
    state = model.export_state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == expected_tensors(arch)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(arch)


def test_config_names_its_own_model_type_and_round_trips(stem_arch):
    config = to_hf_config(stem_arch, dropout=0.0, special=SPECIAL)
    assert config["model_type"] == CONV_STEM_MODEL_TYPE == VISION.model_type(stem_arch)
    assert from_hf_config(config) == stem_arch
    linear = replace(stem_arch, patch_embed="linear")
    assert to_hf_config(linear, dropout=0.0, special=SPECIAL)["model_type"] == "llava"
    assert from_hf_config(to_hf_config(linear, dropout=0.0, special=SPECIAL)) == linear


def test_stem_parameters_are_input_embeddings_for_freezing_and_layer_decay(stem_arch):
    names = [n for n, _ in CaptionModel(stem_arch).named_parameters() if ".embeddings." in n]
    assert len(names) == 9 and all(VISION.layout.is_embedding(n) for n in names)  # 4 convs x 2 + positions
    assert not VISION.layout.is_embedding("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight")


def test_bad_stem_settings_are_user_errors(stem_arch):
    with pytest.raises(UserError, match="power of two"):
        replace(stem_arch, patch_size=6, image_size=36).check()
    with pytest.raises(UserError, match="model.patch_embed is 'resnet'"):
        replace(stem_arch, patch_embed="resnet").check()
    assert VISION.architecture("vision_tiny", {"patch_embed": "conv"}).patch_embed == "conv"

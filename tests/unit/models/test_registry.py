"""The family registry: presets and checkpoints find their family; unknown ones are named."""

from __future__ import annotations

import pytest

from tempering.errors import UserError
from tempering.models.audio_encoder import AUDIO_ENCODER
from tempering.models.encoder import ENCODER
from tempering.models.llama import LLAMA
from tempering.models.moe import MOE
from tempering.models.registry import (
    FAMILIES,
    family_for_model_type,
    family_of_checkpoint,
    find_preset,
)
from tempering.models.talker import TALKER
from tempering.models.vision import VISION


def test_every_decoder_model_type_belongs_to_its_family():
    for model_type in ("llama", "mistral", "qwen2", "qwen3"):
        assert family_for_model_type(model_type) is LLAMA
    assert family_for_model_type("mixtral") is family_for_model_type("qwen2_moe") is MOE
    assert family_for_model_type("llava") is VISION
    assert family_for_model_type("tempering_llava_conv_stem") is VISION
    assert family_for_model_type("tempering_audio_encoder") is AUDIO_ENCODER
    assert family_for_model_type("tempering_talker") is TALKER
    assert FAMILIES == {"llama": LLAMA, "moe": MOE, "vision": VISION, "encoder": ENCODER,
                        "audio_encoder": AUDIO_ENCODER, "talker": TALKER}


def test_distilbert_and_bert_belong_to_the_encoder_family():
    assert family_for_model_type("distilbert") is family_for_model_type("bert") is ENCODER
    assert find_preset("distilbert") == (ENCODER, ENCODER.presets["distilbert"])
    with pytest.raises(UserError, match="model.n_kv_heads is not a dimension of the encoder family"):
        ENCODER.architecture("encoder_tiny", {"n_kv_heads": 2})


def test_a_checkpoint_names_its_family_in_meta_or_by_its_model_type():
    assert family_of_checkpoint({"model_type": "qwen3"}, {}) is LLAMA
    assert family_of_checkpoint({"model_type": "anything"}, {"family": "llama"}) is LLAMA
    assert family_of_checkpoint({"model_type": "llava"}, {}) is VISION
    with pytest.raises(UserError, match="ckpt/config.json: .*model family 'audio'"):
        family_of_checkpoint({}, {"family": "audio"}, where="ckpt/config.json")
    with pytest.raises(UserError, match="model_type is 'roberta'; Tempering supports llama, mistral, qwen2, qwen3, "
                                        "mixtral, qwen2_moe, llava, tempering_llava_conv_stem, distilbert, bert"):
        family_of_checkpoint({"model_type": "roberta"}, {})


def test_presets_find_their_family_and_unknown_names_get_a_suggestion():
    family, arch = find_preset("tiny")
    assert family is LLAMA and arch.d_model == 64
    with pytest.raises(UserError, match="did you mean small"):
        find_preset("smal")


def test_a_family_builds_from_a_preset_with_overrides_and_refuses_foreign_keys():
    arch = LLAMA.architecture("tiny", {"d_model": 128, "vocab_size": 300})
    assert (arch.d_model, arch.vocab_size, arch.n_layers) == (128, 300, 2)
    with pytest.raises(UserError, match="model.experts is not a dimension of the llama family"):
        LLAMA.architecture("tiny", {"experts": 4})


@pytest.mark.parametrize("family, preset, section", [(LLAMA, "tiny", None), (MOE, "moe_tiny", None),
                                                     (ENCODER, "encoder_tiny", None)])
def test_a_config_json_missing_a_key_or_mistyped_is_one_error_naming_it(family, preset, section):
    from tempering.models.family import SpecialTokenIds

    good = family.to_hf_config(family.architecture(preset, {}), dropout=0.0,
                               special=SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0))
    missing = {key: value for key, value in good.items() if key not in ("hidden_size", "dim")}
    with pytest.raises(UserError, match=r"m/config\.json: config has no '(hidden_size|dim)', which a \w+ model needs"):
        family.from_hf_config(missing, where="m/config.json")
    key = "hidden_size" if "hidden_size" in good else "dim"
    with pytest.raises(UserError, match=r"m/config\.json: config holds a value of the wrong type"):
        family.from_hf_config({**good, key: "wide"}, where="m/config.json")

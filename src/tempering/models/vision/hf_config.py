"""Translate between a `VisionArchitecture` and a Hugging Face LLaVA `config.json` (SigLIP vision tower, Llama text model).

A field mapping, hand-written like the llama family's. The text model's part is the llama
family's own translation. What the captioner cannot reproduce (another vision tower, a
pooling head, other feature layers or projector activations) is a UserError naming the key.
"""

from __future__ import annotations

from typing import Any

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds, reading_hf_config
from tempering.models.llama import hf_config as llama_hf
from tempering.models.vision.architecture import VisionArchitecture

VISION_TOWER_TYPE = "siglip_vision_model"
# model_type of a checkpoint with the conv stem (model.patch_embed: conv). Not "llava" on purpose:
# transformers would load it as LLaVA, fill the stem's absent weights at random and only warn;
# with a model_type it does not know it refuses to load the checkpoint at all.
CONV_STEM_MODEL_TYPE = "tempering_llava_conv_stem"
# LLaVA settings the captioner's forward pass implements; anything else is refused on load.
FIXED = {"vision_feature_layer": -1, "vision_feature_select_strategy": "full", "projector_hidden_act": "gelu",
         "multimodal_projector_bias": True}
FIXED_VISION = {"hidden_act": "gelu_pytorch_tanh", "num_channels": 3, "vision_use_head": False}


def to_hf_config(arch: VisionArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict[str, Any]:
    """`config.json` that transformers loads as LlavaForConditionalGeneration (with a conv stem: Tempering's own type)."""
    text = llama_hf.to_hf_config(arch.lm, dropout=dropout, special=special)
    vision = {"model_type": VISION_TOWER_TYPE, "hidden_size": arch.d_model, "intermediate_size": arch.d_ff,
              "num_hidden_layers": arch.n_layers, "num_attention_heads": arch.n_heads,
              "image_size": arch.image_size, "patch_size": arch.patch_size, "layer_norm_eps": arch.norm_eps,
              "attention_dropout": 0.0, **FIXED_VISION}
    conv = arch.patch_embed == "conv"  # the model_type alone records it
    return {"architectures": ["TemperingConvStemCaptioner" if conv else "LlavaForConditionalGeneration"],
            "model_type": CONV_STEM_MODEL_TYPE if conv else "llava", "text_config": text,
            "vision_config": vision, "image_token_id": arch.image_token_id, "image_seq_length": arch.num_patches,
            "tie_word_embeddings": arch.lm.tie_embeddings, "torch_dtype": "float32", **FIXED}


def from_hf_config(config: dict[str, Any], *, where: str | None = None) -> VisionArchitecture:
    """The VisionArchitecture of a LLaVA `config.json`; UserError names what cannot be reproduced."""
    vision, text = config.get("vision_config"), config.get("text_config")
    if not isinstance(vision, dict) or not isinstance(text, dict):
        raise UserError("a llava config.json needs vision_config and text_config objects", where=where)
    if vision.get("model_type") != VISION_TOWER_TYPE:
        raise UserError(f"vision_config.model_type is {vision.get('model_type')!r}; the vision family reads "
                        f"{VISION_TOWER_TYPE} towers", where=where)
    for key, value in FIXED.items():
        if config.get(key, value) != value:
            raise UserError(f"{key} is {config[key]!r}; the vision family computes {value!r}", where=where)
    for key, value in FIXED_VISION.items():
        if vision.get(key, value) != value:
            raise UserError(f"vision_config.{key} is {vision[key]!r}; the vision family computes {value!r}",
                            where=where)
    with reading_hf_config("llava", where, section="vision_config"):
        arch = VisionArchitecture(
            image_size=int(vision["image_size"]), patch_size=int(vision["patch_size"]),
            d_model=int(vision["hidden_size"]), n_layers=int(vision["num_hidden_layers"]),
            n_heads=int(vision["num_attention_heads"]), d_ff=int(vision["intermediate_size"]),
            norm_eps=float(vision.get("layer_norm_eps", 1e-6)), lm=llama_hf.from_hf_config(text, where=where),
            image_token_id=int(config.get("image_token_id", config.get("image_token_index", 0))),
            patch_embed="conv" if config.get("model_type") == CONV_STEM_MODEL_TYPE else "linear")
    arch.check()
    return arch

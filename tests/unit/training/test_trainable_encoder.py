"""The trainable rules act on the encoder family through its layout: freezing, head-only, layer-wise LR, unfreezing."""

from __future__ import annotations

from tempering.config.schema import TrainingConfig
from tempering.models.encoder import ENCODER
from tempering.models.encoder.architecture import PRESETS
from tempering.models.encoder.model import EncoderModel
from tempering.training.trainable import build_param_groups, frozen_by_config, trainable_at

LAYOUT = ENCODER.layout
NER = PRESETS["encoder_tiny"].with_head("token_classification", ("O", "B-PER", "I-PER"))


def names(model) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def test_freeze_first_blocks_freezes_the_embeddings_with_their_layernorm_and_block_0():
    model = EncoderModel(NER)
    frozen = frozen_by_config(model, TrainingConfig(freeze_first_blocks=1), LAYOUT)
    assert frozen == {n for n in names(model) if n.startswith(("distilbert.embeddings.",
                                                                 "distilbert.transformer.layer.0."))}


def test_train_only_head_trains_the_classifier_alone():
    model = EncoderModel(NER)
    frozen = frozen_by_config(model, TrainingConfig(train_only_head=True), LAYOUT)
    assert names(model) - frozen == {"classifier.weight", "classifier.bias"}


def test_layer_wise_decay_scales_blocks_and_embeddings():
    model = EncoderModel(NER)
    groups = build_param_groups(model, TrainingConfig(layer_lr_decay=0.5, learning_rate=1.0), LAYOUT)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    by_name = {n: scale[id(p)] for n, p in model.named_parameters()}
    assert by_name["classifier.weight"] == 1.0
    assert by_name["distilbert.transformer.layer.1.ffn.lin1.weight"] == 0.5
    assert by_name["distilbert.transformer.layer.0.ffn.lin1.weight"] == 0.25
    assert by_name["distilbert.embeddings.word_embeddings.weight"] == 0.125
    assert by_name["distilbert.embeddings.LayerNorm.weight"] == 0.125


def test_progressive_unfreezing_opens_the_top_block_first_and_the_embeddings_last():
    model = EncoderModel(NER)
    training = TrainingConfig(unfreeze_top_blocks=1, unfreeze_every_steps=2)
    first = set(trainable_at(model, set(), training, 0, LAYOUT))
    assert "classifier.weight" in first and "distilbert.transformer.layer.1.ffn.lin1.weight" in first
    assert not any(n.startswith(("distilbert.transformer.layer.0.", "distilbert.embeddings.")) for n in first)
    assert set(trainable_at(model, set(), training, 2, LAYOUT)) == names(model)


def test_the_mlm_head_shares_its_projection_with_the_embeddings_so_head_only_trains_both():
    model = EncoderModel(PRESETS["encoder_tiny"])
    frozen = frozen_by_config(model, TrainingConfig(train_only_head=True), LAYOUT)
    assert "distilbert.embeddings.word_embeddings.weight" not in frozen
    assert "vocab_transform.weight" not in frozen and "distilbert.transformer.layer.0.ffn.lin1.weight" in frozen

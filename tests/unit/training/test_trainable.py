"""Frozen parameters, per-group learning rates and progressive unfreezing on the tiny preset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tempering.config.schema import TrainingConfig
from tempering.errors import UserError
from tempering.models.llama import LLAMA
from tempering.models.llama.architecture import PRESETS
from tempering.models.llama.model import build_model
from tempering.training.optim import set_learning_rate
from tempering.training.trainable import (
    TRAINABLE_COLUMNS,
    apply_requires_grad,
    build_param_groups,
    describe_trainable,
    frozen_by_config,
)

VOCAB = 256
LAYOUT = LLAMA.layout
EMBED, NORM, HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


def tiny_model(**overrides):
    torch.manual_seed(0)
    return build_model(PRESETS["tiny"].with_overrides(vocab_size=VOCAB, **overrides))


def block_names(model, index):
    return {name for name, _ in model.named_parameters() if name.startswith(f"model.layers.{index}.")}


def make_optimizer(model, training):
    frozen = frozen_by_config(model, training, LAYOUT)
    groups = build_param_groups(model, training, LAYOUT)
    optimizer = torch.optim.AdamW(groups, lr=training.learning_rate)
    return frozen, optimizer


def train_steps(model, optimizer, steps, *, training, frozen, on_step=None):
    """Run AdamW steps on random tokens, setting requires_grad per step as the loop does."""
    generator = torch.Generator().manual_seed(1)
    for step in steps:
        trainable = apply_requires_grad(model, frozen, training, step, LAYOUT)
        if on_step:
            on_step(step, trainable)
        set_learning_rate(optimizer, training.learning_rate)
        tokens = torch.randint(0, VOCAB, (2, 9), generator=generator)
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def scale_by_name(model, groups):
    by_id = {id(p): group["lr_scale"] for group in groups for p in group["params"]}
    return {name: by_id.get(id(p)) for name, p in model.named_parameters()}


def test_frozen_parameters_stay_bit_identical_and_get_no_optimizer_state():
    model = tiny_model(tie_embeddings=False)
    training = TrainingConfig(freeze=["model.embed_tokens", "model.layers.[0].*"], learning_rate=1e-2)
    frozen, optimizer = make_optimizer(model, training)
    assert frozen == {EMBED} | block_names(model, 0)
    before = snapshot(model)
    train_steps(model, optimizer, range(3), training=training, frozen=frozen)
    stateful = {id(p) for p in optimizer.state}
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, before[name]), name
            assert id(param) not in stateful, name
        else:
            assert not torch.equal(param, before[name]), name
            assert id(param) in stateful, name


def test_freeze_first_blocks_freezes_embeddings_and_lower_blocks():
    model = tiny_model(n_layers=3, tie_embeddings=False)
    frozen = frozen_by_config(model, TrainingConfig(freeze_first_blocks=2), LAYOUT)
    assert frozen == {EMBED} | block_names(model, 0) | block_names(model, 1)
    with pytest.raises(UserError, match="freeze_first_blocks is 4.*only 3 blocks"):
        frozen_by_config(model, TrainingConfig(freeze_first_blocks=4), LAYOUT)


def test_train_only_head_trains_head_and_final_norm_and_a_tied_embedding():
    untied = tiny_model(tie_embeddings=False)
    frozen = frozen_by_config(untied, TrainingConfig(train_only_head=True), LAYOUT)
    assert {n for n, _ in untied.named_parameters()} - frozen == {HEAD, NORM}
    tied = tiny_model()
    frozen = frozen_by_config(tied, TrainingConfig(train_only_head=True), LAYOUT)
    assert {n for n, _ in tied.named_parameters()} - frozen == {EMBED, NORM}


def test_freezing_a_tied_head_by_name_freezes_the_shared_embedding():
    model = tiny_model()
    assert frozen_by_config(model, TrainingConfig(freeze=["lm_head"]), LAYOUT) == {EMBED}


@pytest.mark.parametrize("key, value, pattern", [
    ("freeze", ["model.layer.0.*"], "model.layer.0.*"),
    ("lr_groups", {"lm_head": 1e-3, "model.embed": 1e-4}, "model.embed"),
])
def test_a_pattern_that_matches_nothing_is_an_error(key, value, pattern):
    model = tiny_model()
    training = TrainingConfig(**{key: value})
    with pytest.raises(UserError, match=f"training.{key} pattern '{pattern}' matches no parameter"):
        build_param_groups(model, training, LAYOUT)


def test_freezing_everything_is_an_error():
    with pytest.raises(UserError, match="freeze every parameter"):
        frozen_by_config(tiny_model(), TrainingConfig(freeze=["*"]), LAYOUT)


def test_groups_carry_their_configured_learning_rates():
    model = tiny_model(tie_embeddings=False)
    training = TrainingConfig(learning_rate=5e-4, lr_groups={"lm_head": 1e-3, "model.layers.1.*": 2e-4,
                                                             "model.layers.*": 1e-4})
    groups = build_param_groups(model, training, LAYOUT)
    optimizer = torch.optim.AdamW(groups, lr=training.learning_rate)
    lr_by_id = {}
    for peak in (5e-4, 2.5e-4):  # the schedule moves every group in proportion
        set_learning_rate(optimizer, peak)
        lr_by_id = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        for name, param in model.named_parameters():
            wanted = {HEAD: 1e-3}.get(name, 2e-4 if ".layers.1." in name else 1e-4 if ".layers." in name else 5e-4)
            assert lr_by_id[id(param)] == pytest.approx(wanted * peak / 5e-4), name
    assert len(lr_by_id) == sum(1 for _ in model.parameters())


def test_layer_wise_decay_scales_blocks_embeddings_norm_and_head():
    model = tiny_model(n_layers=4, tie_embeddings=False)
    scales = scale_by_name(model, build_param_groups(model, TrainingConfig(layer_lr_decay=0.5), LAYOUT))
    for name, scale in scales.items():
        if ".layers." in name:
            index = int(name.split(".")[2])
            assert scale == pytest.approx(0.5 ** (4 - index)), name
    assert scales[EMBED] == pytest.approx(0.5 ** 5)
    assert scales[NORM] == scales[HEAD] == 1.0


def test_lr_groups_win_over_layer_decay_and_groups_are_merged():
    model = tiny_model(n_layers=4, tie_embeddings=False)
    training = TrainingConfig(learning_rate=1e-3, layer_lr_decay=0.5, lr_groups={"model.layers.0": 1e-3})
    groups = build_param_groups(model, training, LAYOUT)
    scales = scale_by_name(model, groups)
    assert all(scales[n] == 1.0 for n in block_names(model, 0))
    assert all(scales[n] == pytest.approx(0.25) for n in block_names(model, 2))
    # One group per (weight decay, scale): block 0 shares scale 1.0 with the final norm and head.
    keys = [(g["weight_decay"], g["lr_scale"]) for g in groups]
    assert len(keys) == len(set(keys))
    assert {g["name"] for g in groups if g["lr_scale"] == 1.0} == {"layers.0, lm_head (decay)",
                                                                   "layers.0, norm (no decay)"}


def test_default_groups_split_decay_from_no_decay_and_hold_tied_weights_once():
    model = tiny_model()  # tied embeddings
    groups = build_param_groups(model, TrainingConfig(weight_decay=0.1), LAYOUT)
    assert [(g["name"], g["weight_decay"], g["lr_scale"]) for g in groups] == [
        ("embed_tokens, layers.0-1, norm (no decay)", 0.0, 1.0),
        ("layers.0-1 (decay)", 0.1, 1.0),
    ]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert id(model.lm_head.weight) in ids


def test_progressive_unfreezing_opens_one_block_every_s_steps():
    model = tiny_model(n_layers=4, tie_embeddings=False)
    training = TrainingConfig(unfreeze_top_blocks=1, unfreeze_every_steps=3, learning_rate=1e-2)
    frozen, optimizer = make_optimizer(model, training)
    before = snapshot(model)
    seen: dict[int, frozenset] = {}
    state_at: dict[int, set] = {}
    unmoved_at: dict[int, set] = {}

    def record(step, trainable):
        seen[step] = frozenset(trainable)
        state_at[step] = {name for name, p in model.named_parameters() if p in optimizer.state}
        unmoved_at[step] = {name for name, p in model.named_parameters() if torch.equal(p, before[name])}

    train_steps(model, optimizer, range(11), training=training, frozen=frozen, on_step=record)
    changes = [step for step in range(1, 11) if seen[step] != seen[step - 1]]
    assert changes == [3, 6, 9]
    assert seen[0] == block_names(model, 3) | {NORM, HEAD}
    assert seen[3] == seen[0] | block_names(model, 2)
    assert seen[9] == {name for name, _ in model.named_parameters()}  # embeddings join with the last block
    # A block waiting to be unfrozen has no optimizer state and has not moved.
    assert not state_at[3] & block_names(model, 2)
    assert unmoved_at[3] == block_names(model, 0) | block_names(model, 1) | block_names(model, 2) | {EMBED}
    assert state_at[6] >= block_names(model, 2)
    assert not state_at[9] & (block_names(model, 0) | {EMBED})
    assert unmoved_at[9] == block_names(model, 0) | {EMBED}
    assert EMBED in state_at[10]


def test_progressive_unfreezing_keeps_permanent_freezes_and_trains_a_tied_head():
    model = tiny_model(n_layers=3)
    training = TrainingConfig(unfreeze_top_blocks=1, unfreeze_every_steps=2, freeze=["model.layers.2.mlp"])
    frozen = frozen_by_config(model, training, LAYOUT)
    top_attention = block_names(model, 2) - frozen
    assert set(apply_requires_grad(model, frozen, training, 0, LAYOUT)) == top_attention | {NORM, EMBED}
    assert not model.model.layers[2].mlp.up_proj.weight.requires_grad
    everything = {name for name, _ in model.named_parameters()}
    assert set(apply_requires_grad(model, frozen, training, 100, LAYOUT)) == everything - frozen


def test_unfreeze_every_steps_without_top_blocks_is_an_error():
    model = tiny_model()
    with pytest.raises(UserError, match="unfreeze_every_steps needs training.unfreeze_top_blocks"):
        apply_requires_grad(model, set(), TrainingConfig(unfreeze_every_steps=5), 0, LAYOUT)


def test_describe_trainable_counts_every_parameter_once():
    model = tiny_model(tie_embeddings=False)
    training = TrainingConfig(learning_rate=1e-3, freeze_first_blocks=1, lr_groups={"lm_head": 2e-3})
    frozen = frozen_by_config(model, training, LAYOUT)
    rows = describe_trainable(model, build_param_groups(model, training, LAYOUT), 1e-3, frozen)
    assert all(len(row) == len(TRAINABLE_COLUMNS) for row in rows)
    assert rows[-1][:2] == ["frozen", len(frozen)]
    total = sum(int(row[2].replace(",", "")) for row in rows)
    assert total == sum(p.numel() for p in model.parameters())
    assert ["lm_head (decay)", 1, f"{VOCAB * 64:,}", "0.002", "0.1"] in rows

"""The one assembly: frozen weights get no gradient and stay out of the clipping norm; checkpoint sources agree."""

from __future__ import annotations

import math

import pytest
import torch

from tempering.config import load_config
from tempering.errors import UserError
from tempering.training.assembly import assemble, source_from_preset
from tempering.training.causal_lm import CausalLM
from tempering.training.loop import TrainState, _track_best, accumulate_gradients
from tempering.training.objective import BestMetric, Objective
from tempering.training.preference import Dpo

VOCAB = 256


def assembled(*overrides):
    config = load_config(None, ["model.preset=tiny", "run.seed=7", *overrides])
    return assemble(config, source_from_preset(config.model, VOCAB), CausalLM(), device=torch.device("cpu"))


def clip_norm_after_one_batch(assembly) -> tuple[float, dict]:
    """The gradient norm the loop clips (over parameters that got a gradient), and the gradients by name."""
    tokens = torch.randint(0, VOCAB, (4, 17), generator=torch.Generator().manual_seed(0))
    objective = assembly.objective
    accumulate_gradients(assembly.model, objective, [{"tokens": tokens}], objective.count_units({"tokens": tokens}))
    with_grad = [p for p in assembly.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(with_grad, math.inf)
    return norm.item(), {name: p.grad for name, p in assembly.model.named_parameters() if p.grad is not None}


def test_frozen_parameters_get_no_gradient_and_stay_out_of_the_clipping_norm():
    full_norm, full = clip_norm_after_one_batch(assembled())
    frozen = assembled("training.freeze=[model.layers.0.*]")
    norm, grads = clip_norm_after_one_batch(frozen)
    assert frozen.frozen and not set(grads) & frozen.frozen
    assert all(not frozen.model.get_parameter(name).requires_grad for name in frozen.frozen)
    # Same seed, same weights: the trainable parameters' gradients are the unfrozen run's, and the
    # norm is theirs alone.
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(full[name]) for name in grads]))
    assert norm == pytest.approx(expected.item(), rel=1e-6) and norm < full_norm
    in_optimizer = {id(p) for group in frozen.optimizer.param_groups for p in group["params"]}
    assert all(id(frozen.model.get_parameter(name)) not in in_optimizer for name in frozen.frozen)


def test_progressive_unfreezing_reports_what_joins_and_when():
    assembly = assembled("training.unfreeze_top_blocks=1", "training.unfreeze_every_steps=3")
    opened = {step: assembly.update_trainable(step) for step in range(7)}
    assert opened == {0: None, 1: None, 2: None, 3: "layers.0", 4: None, 5: None, 6: None}
    assert assembly.model.model.layers[0].mlp.up_proj.weight.requires_grad


def test_bad_trainable_rules_fail_at_assembly_before_anything_is_written():
    with pytest.raises(UserError, match="matches no parameter"):
        assembled("training.freeze=[model.layerz.*]")
    with pytest.raises(UserError, match="unfreeze_every_steps needs training.unfreeze_top_blocks"):
        assembled("training.unfreeze_every_steps=2")


def test_checkpoint_configs_and_meta_come_from_the_family():
    assembly = assembled()

    class Tok:
        bos_id, eos_id, pad_id = 0, 1, 2

    hf_config, generation = assembly.checkpoint_configs(Tok(), load_config(None, []), extra_eos_ids=(5,))
    assert hf_config["model_type"] == "llama" and hf_config["eos_token_id"] == 1
    assert generation == {"bos_token_id": 0, "eos_token_id": [1, 5], "pad_token_id": 2}
    assert assembly.checkpoint_meta() == {"family": "llama", "model_type": "llama", "preset": "tiny"}


class Accuracy(Objective):
    """A stand-in objective whose best metric is the highest accuracy."""

    name, unit, perplexity = "toy", "labels", False
    best_metric = BestMetric("accuracy", "max")


def test_best_metric_direction_decides_best_and_patience():
    state = TrainState()
    for step, accuracy in ((1, 0.5), (2, 0.7), (3, 0.6), (4, 0.7)):
        state.step, state.last_val = step, {"val": {"loss": 1.0 - accuracy, "accuracy": accuracy}}
        _track_best(state, "val", Accuracy())
    assert (state.best_step, state.best_value, state.evals_without_improvement) == (2, 0.7, 2)
    assert BestMetric().improves(0.9, 1.0) and not BestMetric().improves(1.1, 1.0)
    assert not BestMetric().improves(float("nan"), None)


def test_old_trainer_states_keep_their_best_loss():
    saved = {"step": 5, "best_val_loss": 2.5, "best_step": 4}
    assert TrainState.from_saved(saved, CausalLM()).best_value == 2.5
    assert TrainState.from_saved(saved, Accuracy()).best_value is None


def test_objectives_declare_their_unit_and_perplexity():
    assert (CausalLM.unit, CausalLM.perplexity, CausalLM.best_metric) == ("tokens", True, BestMetric("loss", "min"))
    assert (Dpo.unit, Dpo.perplexity) == ("pairs", False)

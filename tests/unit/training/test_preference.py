"""DPO: losses equal the published formulas, log-probs equal full-logit ones, the reference can be precomputed."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tempering.errors import UserError
from tempering.models.llama.architecture import PRESETS
from tempering.models.llama.model import build_model
from tempering.training.preference import (
    Dpo,
    PreferenceBatches,
    dpo_loss,
    precompute_reference_logps,
    sequence_logps,
)

PAD = 0
# Fixed sequence log-probs of three pairs; h = (pc - pr) - (rc - rr) = [1, -1, 2.5].
POLICY_CHOSEN = [-10.0, -12.0, -8.0]
POLICY_REJECTED = [-11.0, -11.0, -9.5]
REF_CHOSEN = [-10.5, -11.5, -8.5]
REF_REJECTED = [-10.5, -11.5, -7.5]
H = [1.0, -1.0, 2.5]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def reference_loss(loss_type: str, beta: float, smoothing: float = 0.0) -> list[float]:
    """The papers' per-pair losses, written out in plain floats."""
    if loss_type == "sigmoid":
        return [-(1 - smoothing) * log_sigmoid(beta * h) - smoothing * log_sigmoid(-beta * h) for h in H]
    if loss_type == "ipo":
        return [(h - 1 / (2 * beta)) ** 2 for h in H]
    return [max(0.0, 1 - beta * h) for h in H]


def logps(requires_grad: bool = False):
    return [torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad)
            for v in (POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)]


@pytest.mark.parametrize(("loss_type", "beta", "smoothing"),
                         [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.2), ("ipo", 0.1, 0.0), ("ipo", 0.8, 0.0),
                          ("hinge", 0.1, 0.0), ("hinge", 0.6, 0.0)])
def test_dpo_loss_equals_the_published_formulas(loss_type, beta, smoothing):
    losses, _ = dpo_loss(*logps(), beta=beta, loss_type=loss_type, label_smoothing=smoothing)
    assert losses.tolist() == pytest.approx(reference_loss(loss_type, beta, smoothing), rel=1e-12)


def test_rewards_metrics_on_a_hand_example():
    _, metrics = dpo_loss(*logps(), beta=0.5)
    # rewards/chosen = 0.5 * (pc - rc) = [0.25, -0.25, 0.25]; rejected = 0.5 * (pr - rr) = [-0.25, 0.25, -1.0]
    expected = {"rewards/chosen": 0.25 / 3, "rewards/rejected": -1.0 / 3, "rewards/margins": 1.25 / 3,
                "rewards/accuracies": 2 / 3, "logps/chosen": -10.0, "logps/rejected": -31.5 / 3}
    assert {k: v.item() for k, v in metrics.items()} == pytest.approx(expected, rel=1e-12)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())


def test_gradients_reach_only_the_policy():
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = logps(requires_grad=True)
    beta = 0.1
    losses, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta)
    losses.sum().backward()
    assert ref_chosen.grad is None and ref_rejected.grad is None
    assert all(not v.requires_grad for v in metrics.values())
    # d/d pc of -log sigmoid(beta h) = -beta * sigmoid(-beta h); the rejected side is its negative.
    expected = [-beta / (1 + math.exp(beta * h)) for h in H]
    assert policy_chosen.grad.tolist() == pytest.approx(expected, rel=1e-12)
    assert policy_rejected.grad.tolist() == pytest.approx([-g for g in expected], rel=1e-12)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="sigmoid, ipo, hinge"):
        dpo_loss(*logps(), beta=0.1, loss_type="kto")
    with pytest.raises(UserError, match="label_smoothing"):
        dpo_loss(*logps(), beta=0.1, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(UserError, match="beta"):
        dpo_loss(*logps(), beta=0.0)


@dataclass
class Rendered:
    input_ids: np.ndarray
    labels: np.ndarray


def make_response(rng, prompt: np.ndarray, length: int) -> Rendered:
    """Prompt + response; labels (shifted) on the response tokens only."""
    input_ids = np.concatenate([prompt, rng.integers(1, 256, length)]).astype(np.int32)
    labels = np.full(len(input_ids), -100, np.int32)
    labels[len(prompt) - 1:-1] = input_ids[len(prompt):]
    return Rendered(input_ids, labels)


def make_pairs(num_pairs: int, seed: int = 0) -> list[tuple[Rendered, Rendered]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(num_pairs):
        prompt = rng.integers(1, 256, rng.integers(3, 12))
        pairs.append((make_response(rng, prompt, rng.integers(2, 15)), make_response(rng, prompt, rng.integers(2, 15))))
    return pairs


def to_torch(batch):
    return {key: torch.from_numpy(value) for key, value in batch.items() if isinstance(value, np.ndarray)}


def test_preference_batches_are_chosen_then_rejected_and_reproducible():
    pairs = make_pairs(10)
    batches = PreferenceBatches(pairs, batch_size=4, seed=3, pad_id=PAD)
    assert batches.batches_per_epoch == 3
    seen = []
    for g in range(3):
        batch = batches.batch(g)
        num = len(batch["pair_index"])
        assert batch["input_ids"].shape[0] == 2 * num and batch["input_ids"].shape[1] % 8 == 0
        for row, pair in enumerate(batch["pair_index"]):
            for side in (0, 1):
                example = pairs[pair][side]
                tokens = batch["input_ids"][row + side * num]
                assert tokens[:len(example.input_ids)].tolist() == example.input_ids.tolist()
                assert (tokens[len(example.input_ids):] == PAD).all()
                assert (batch["labels"][row + side * num, len(example.labels):] == -100).all()
        seen.extend(batch["pair_index"].tolist())
    assert sorted(seen) == list(range(10))
    again = PreferenceBatches(pairs, batch_size=4, seed=3, pad_id=PAD)
    assert (again.batch(4)["input_ids"] == batches.batch(4)["input_ids"]).all()
    assert batches.batch(3)["pair_index"].tolist() != batches.batch(0)["pair_index"].tolist()  # epoch 1 reshuffles


def test_a_pair_without_trained_tokens_is_refused():
    chosen, rejected = make_pairs(1)[0]
    empty = Rendered(rejected.input_ids, np.full(len(rejected.labels), -100, np.int32))
    with pytest.raises(ValueError, match="pair 0: the rejected response has no trained tokens"):
        PreferenceBatches([(chosen, empty)], batch_size=1, seed=0, pad_id=PAD)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(PRESETS["tiny"].with_overrides(vocab_size=256)).eval()


def full_logit_logps(model, batch):
    """Reference: log_softmax over full (R, T, V) logits, summed at the trained labels."""
    logp = torch.log_softmax(model(batch["input_ids"]).float(), dim=-1)
    trained = batch["labels"] != -100
    picked = logp.gather(-1, batch["labels"].clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * trained).sum(-1), trained.sum(-1)


def test_sequence_logps_equal_full_logits_in_value_and_gradient(model):
    batch = to_torch(PreferenceBatches(make_pairs(3), batch_size=3, seed=0, pad_id=PAD).batch(0))
    weights = torch.linspace(0.5, 2.0, 6)  # distinct per-row upstream gradients, as DPO gives
    results = []
    for compute in (lambda: sequence_logps(model, batch, chunk_size=7), lambda: full_logit_logps(model, batch)):
        model.zero_grad(set_to_none=True)
        sums, counts = compute()
        (sums * weights).sum().backward()
        results.append((sums.detach(), counts, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (ours, our_counts, our_grads), (full, full_counts, full_grads) = results
    torch.testing.assert_close(ours, full, rtol=0, atol=1e-5)
    assert our_counts.tolist() == full_counts.tolist() == (batch["labels"] != -100).sum(-1).tolist()
    for name in full_grads:
        torch.testing.assert_close(our_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_concatenated_forward_equals_separate_forwards(model):
    pairs = make_pairs(3, seed=1)
    batch = PreferenceBatches(pairs, batch_size=3, seed=0, pad_id=PAD, shuffle=False).batch(0)
    with torch.no_grad():
        together, _ = sequence_logps(model, to_torch(batch))
        for side in (0, 1):
            alone = PreferenceBatches([(p[side], p[side]) for p in pairs], batch_size=3, seed=0, pad_id=PAD,
                                      shuffle=False).batch(0)
            separate, _ = sequence_logps(model, {k: v[:3] for k, v in to_torch(alone).items()})
            torch.testing.assert_close(together[side * 3:side * 3 + 3], separate, rtol=0, atol=1e-5)


def test_precomputed_reference_equals_the_live_reference(model):
    torch.manual_seed(1)
    policy = build_model(PRESETS["tiny"].with_overrides(vocab_size=256))
    reference = model
    pairs = make_pairs(7, seed=2)
    batches = PreferenceBatches(pairs, batch_size=3, seed=4, pad_id=PAD)
    tables = precompute_reference_logps(reference, batches)
    assert tables[0].shape == (7,) and not torch.isnan(torch.stack(tables)).any()
    for g in (batches.batches_per_epoch + 1, 0):  # a batch of epoch 1 has other pairs and padding
        batch = to_torch(batches.batch(g))
        live = Dpo(beta=0.1, ref_model=reference)(policy, batch)
        stored = Dpo(beta=0.1, ref_logps=tables)(policy, batch)
        assert live[1] == stored[1] == Dpo(beta=0.1, ref_model=reference).count_units(batch) == len(batch["pair_index"])
        torch.testing.assert_close(stored[0], live[0], rtol=0, atol=1e-6)
        for name in live[2]:
            torch.testing.assert_close(stored[2][name], live[2][name], rtol=0, atol=1e-5, msg=name)


def test_objective_sums_over_pairs_and_matches_dpo_loss(model):
    torch.manual_seed(2)
    policy = build_model(PRESETS["tiny"].with_overrides(vocab_size=256))
    batch = to_torch(PreferenceBatches(make_pairs(4, seed=5), batch_size=4, seed=0, pad_id=PAD).batch(0))
    model.zero_grad(set_to_none=True)
    loss_sum, num_pairs, metric_sums = Dpo(beta=0.2, loss_type="ipo", ref_model=model)(policy, batch)
    with torch.no_grad():
        policy_logps, _ = sequence_logps(policy, batch)
        ref_logps, _ = sequence_logps(model, batch)
    losses, means = dpo_loss(policy_logps[:4], policy_logps[4:], ref_logps[:4], ref_logps[4:], beta=0.2,
                             loss_type="ipo")
    assert num_pairs == 4
    torch.testing.assert_close(loss_sum.detach(), losses.sum())
    for name, mean in means.items():
        torch.testing.assert_close(metric_sums[name] / 4, mean, msg=name)
    loss_sum.backward()
    assert all(p.grad is None for p in model.parameters())  # the reference gets no gradient


def test_a_few_dpo_steps_prefer_the_chosen_responses(model):
    torch.manual_seed(3)
    policy = copy.deepcopy(model).train()
    batches = PreferenceBatches(make_pairs(8, seed=6), batch_size=8, seed=0, pad_id=PAD)
    tables = precompute_reference_logps(model, batches)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for step in range(6):
        loss_sum, num_pairs, metrics = Dpo(beta=0.5, ref_logps=tables)(policy, to_torch(batches.batch(step)))
        if step == 0:
            assert metrics["rewards/margins"].item() == pytest.approx(0.0, abs=1e-4)  # policy == reference
        optimizer.zero_grad()
        (loss_sum / num_pairs).backward()
        optimizer.step()
    assert metrics["rewards/accuracies"].item() / num_pairs > 0.5
    assert metrics["rewards/margins"].item() > 0


def test_sequence_logps_keep_no_logits_for_the_backward_pass(model):
    batch = to_torch(PreferenceBatches(make_pairs(3), batch_size=3, seed=0, pad_id=PAD).batch(0))
    vocab_size = model.lm_head.weight.shape[0]

    def saved_shapes(compute) -> list[tuple[int, ...]]:
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
            compute()
        return shapes

    assert any(s[-1] == vocab_size for s in saved_shapes(lambda: full_logit_logps(model, batch)))  # the check bites
    assert not any(s[-1] == vocab_size for s in saved_shapes(lambda: sequence_logps(model, batch)))

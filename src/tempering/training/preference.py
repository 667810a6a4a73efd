"""The DPO objective on rendered preference pairs, with its batches and reference log-probs.

DPO compares, per preference pair, how much more the policy than the reference
prefers the chosen response: h = (log pi(c) - log pi(r)) - (log ref(c) - log ref(r)),
with log-probabilities summed over the response's trained tokens. Chosen and rejected
rows go through the model in one concatenated batch (chosen rows first). The loss
types follow their papers: sigmoid (DPO, Rafailov et al. 2023; label smoothing as in
conservative DPO), ipo (Azar et al. 2023), hinge (SLiC, Zhao et al. 2023).
Written here because TRL's `DPOTrainer` owns its own training loop and data pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tempering.data.example_batches import (
    IGNORE_INDEX,
    TokenizedExample,
    pad_examples,
    padding_mask,
)
from tempering.data.packing import plan_epoch
from tempering.errors import UserError
from tempering.models.auxiliary import hidden_states_and_auxiliary
from tempering.models.chunked_loss import DEFAULT_CHUNK_SIZE
from tempering.training.objective import (
    BestMetric,
    LossResult,
    NumpyBatch,
    Objective,
    with_auxiliary,
)

LOSS_TYPES = ("sigmoid", "ipo", "hinge")
TensorBatch = dict[str, "torch.Tensor | None"]


class PreferenceBatches:
    """Micro-batches of (chosen, rejected) pairs, addressable by a global micro-batch index.

    Micro-batch g is batch (g mod per_epoch) of epoch (g div per_epoch); an epoch's pair
    order is a pure function of (seed, epoch); its last, smaller batch is kept.
    """

    def __init__(self, pairs: list[tuple[TokenizedExample, TokenizedExample]], *, batch_size: int,
                 seed: int, pad_id: int, max_len: int | None = None, shuffle: bool = True):
        for index, pair in enumerate(pairs):
            for side, example in zip(("chosen", "rejected"), pair, strict=True):
                if not (np.asarray(example.labels) != IGNORE_INDEX).any():
                    raise ValueError(f"pair {index}: the {side} response has no trained tokens "
                                     "(truncated away?); drop the pair when rendering")
        if not pairs:
            raise ValueError("no preference pairs to batch")
        self.pairs = pairs
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.max_len = max_len
        self.shuffle = shuffle
        self.num_pairs = len(pairs)
        self.batches_per_epoch = -(-self.num_pairs // batch_size)
        self._orders: dict[int, np.ndarray] = {}

    def pair_order(self, epoch: int) -> np.ndarray:
        """The (cached) pair indices an epoch visits, in order."""
        if epoch not in self._orders:
            plan = plan_epoch([self.num_pairs], [1.0], self.seed, epoch, shuffle=self.shuffle)
            self._orders = {epoch: plan.sequence_index}
        return self._orders[epoch]

    def batch(self, micro_batch: int) -> dict[str, np.ndarray]:
        """(2B, T) input_ids and labels, chosen rows then rejected rows, and (B,) pair_index; int64."""
        epoch, index = divmod(micro_batch, self.batches_per_epoch)
        pair_index = self.pair_order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        rows = [self.pairs[i][0] for i in pair_index] + [self.pairs[i][1] for i in pair_index]
        input_ids, labels = pad_examples(rows, pad_id=self.pad_id, max_len=self.max_len)
        lengths = [len(row.input_ids) for row in rows]
        return {"input_ids": input_ids, "labels": labels, "pair_index": pair_index.astype(np.int64),
                "padding_mask": padding_mask(lengths, input_ids.shape[1]), "num_tokens": int(sum(lengths))}


def sequence_logps(model: nn.Module, batch: TensorBatch, *,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (sum of log p(label) over trained tokens, number of trained tokens), each (R,).

    Logits exist one chunk of `chunk_size` tokens at a time; with autograd on, each
    chunk is recomputed in the backward pass instead of keeping its (chunk, V) logits.
    """
    # Right padding needs no document mask; the padding mask only spares computing the padding.
    hidden = model.hidden_states(batch["input_ids"], padding_mask=batch.get("padding_mask"))  # (R, T, D)
    return label_logps(hidden, model.lm_head.weight, batch["labels"], chunk_size=chunk_size)


def label_logps(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` from (R, T, D) hidden states and the head weight."""
    flat_hidden, flat_labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    pieces = []
    for start in range(0, flat_labels.shape[0], chunk_size):
        args = (flat_hidden[start:start + chunk_size], weight, flat_labels[start:start + chunk_size])
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_label_logps, *args, use_reentrant=False))
        else:
            pieces.append(_label_logps(*args))
    token_logps = torch.cat(pieces).view_as(labels)  # (R, T)
    trained = labels != IGNORE_INDEX
    return torch.where(trained, token_logps, 0.0).sum(dim=-1), trained.sum(dim=-1)


def _label_logps(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log_softmax(hidden @ weight.T) at each label, in fp32; ignored labels give a finite dummy."""
    logits = F.linear(hidden, weight).float()  # (n, V)
    target = labels.clamp_min(0).unsqueeze(1)  # (n, 1)
    return (logits.gather(1, target) - logits.logsumexp(dim=-1, keepdim=True)).squeeze(1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (loss per pair, metrics averaged over the pairs) from sequence log-probs, each (B,).

    Gradients reach only the policy log-probs. Metrics are tensors (no host sync).
    """
    losses = _pair_losses(policy_chosen, policy_rejected, ref_chosen.detach(), ref_rejected.detach(),
                          beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
    metrics = _pair_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    return losses, {name: values.mean() for name, values in metrics.items()}


def _pair_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
                 loss_type: str, label_smoothing: float) -> torch.Tensor:
    check_dpo_settings(beta, loss_type, label_smoothing)
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        return (-F.logsigmoid(beta * h) * (1 - label_smoothing)
                - F.logsigmoid(-beta * h) * label_smoothing)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return F.relu(1 - beta * h)  # hinge


def check_dpo_settings(beta: float, loss_type: str, label_smoothing: float) -> None:
    """Raise a UserError for a DPO setting the loss cannot use."""
    if loss_type not in LOSS_TYPES:
        raise UserError(f"unknown DPO loss type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    if beta <= 0:
        raise UserError(f"DPO beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise UserError(f"DPO label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise UserError(f"DPO label_smoothing applies to loss type 'sigmoid' only, not {loss_type!r}")


def _pair_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                  beta: float) -> dict[str, torch.Tensor]:
    """Per-pair implicit rewards beta * (log pi - log ref) and log-probs, detached."""
    chosen = beta * (policy_chosen - ref_chosen).detach()
    rejected = beta * (policy_rejected - ref_rejected).detach()
    return {"rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": chosen - rejected,
            "rewards/accuracies": (chosen > rejected).to(chosen.dtype),
            "logps/chosen": policy_chosen.detach(), "logps/rejected": policy_rejected.detach()}


class Dpo(Objective):
    """DPO (or IPO / hinge) loss per preference pair against a frozen reference.

    The reference is either `ref_logps` — (chosen, rejected) tables over all pairs from
    `precompute_reference_logps`, looked up by `batch["pair_index"]` — or `ref_model`
    (frozen, in eval mode), run here without gradients. Loss and metrics are summed over
    pairs; the loop divides by the pairs of the whole step. Validation keeps the lowest loss.
    """

    name = "dpo"
    unit = "pairs"
    perplexity = False
    best_metric = BestMetric("loss", "min")

    def __init__(self, *, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                 ref_model: nn.Module | None = None, ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None):
        check_dpo_settings(beta, loss_type, label_smoothing)
        if (ref_model is None) == (ref_logps is None):
            raise ValueError("Dpo needs exactly one of ref_logps or ref_model")
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.ref_model, self.ref_logps = ref_model, ref_logps

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed pair losses, the number of pairs, and reward/log-prob metrics summed over pairs."""
        num_pairs = batch["pair_index"].shape[0]
        hidden, auxiliary = hidden_states_and_auxiliary(  # (2B, T, D), router losses (MoE)
            model, batch["input_ids"], padding_mask=batch.get("padding_mask"))
        logps, _ = label_logps(hidden, model.lm_head.weight, batch["labels"])  # (2B,)
        if self.ref_logps is not None:
            index = batch["pair_index"].to(self.ref_logps[0].device)
            ref_chosen, ref_rejected = (table[index].to(logps.device, logps.dtype) for table in self.ref_logps)
        else:
            with torch.no_grad():
                ref, _ = sequence_logps(self.ref_model, batch)
            ref_chosen, ref_rejected = ref[:num_pairs], ref[num_pairs:]
        policy_chosen, policy_rejected = logps[:num_pairs], logps[num_pairs:]
        losses = _pair_losses(policy_chosen, policy_rejected, ref_chosen.detach(), ref_rejected.detach(),
                              beta=self.beta, loss_type=self.loss_type, label_smoothing=self.label_smoothing)
        metrics = _pair_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta)
        result = LossResult(losses.sum(), num_pairs, {name: values.sum() for name, values in metrics.items()})
        return with_auxiliary(result, auxiliary, num_pairs)

    def count_units(self, batch: NumpyBatch) -> int:
        """Pairs in a preference batch: DPO's normalisation unit."""
        return len(batch["pair_index"])


@torch.no_grad()
def precompute_reference_logps(ref_model: nn.Module, batches: PreferenceBatches, *,
                               device: torch.device | str = "cpu",
                               autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the reference once over every pair; return (chosen, rejected) fp32 CPU tables indexed by pair.

    After this the reference model can be dropped; pass the tables as `Dpo(ref_logps=...)`.
    """
    was_training = ref_model.training
    ref_model.eval()
    tables = torch.full((2, batches.num_pairs), float("nan"))
    for micro_batch in range(batches.batches_per_epoch):  # epoch 0 visits every pair once
        arrays = batches.batch(micro_batch)
        batch = {name: torch.from_numpy(values).to(device) for name, values in arrays.items()
                 if isinstance(values, np.ndarray)}
        with autocast():
            logps, _ = sequence_logps(ref_model, batch)
        pair_index = torch.from_numpy(arrays["pair_index"])
        tables[:, pair_index] = logps.float().cpu().view(2, -1)
    ref_model.train(was_training)
    return tables[0].clone(), tables[1].clone()

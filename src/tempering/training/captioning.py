"""The `caption` objective: cross-entropy on caption tokens after an image prefix, and greedy-caption exact match.

The model sees [image positions, prompt, caption, EOS]; only the caption tokens and the EOS
that ends it are scored (unit: caption tokens), so the loss is comparable across prompts and
image sizes. Validation also captions every image greedily (KV-cached, batched, stopping once
every row has ended or passed its reference's length — longer cannot match) and reports the
exact-match rate and the character error rate (jiwer, the library the speech objective uses)
over the whole split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempering.models.chunked_loss import chunked_cross_entropy
from tempering.training.objective import BestMetric, LossResult, NumpyBatch, Objective, TensorBatch

IGNORE = -100


class Captioning(Objective):
    """Summed caption-token cross-entropy of (pixels, tokens, labels) batches; exact match at validation."""

    name = "caption"
    unit = "tokens"
    perplexity = True

    def __init__(self, decode: Callable[[list[int]], str], eos_id: int, *, best: str = "loss"):
        self.decode, self.eos_id = decode, eos_id
        self.best_metric = BestMetric("exact_match", "max") if best == "exact_match" else BestMetric()

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed loss over caption tokens (labels != -100) and their count."""
        tokens, labels = batch["tokens"], batch["labels"]
        hidden = model.hidden_states(tokens[:, :-1], pixels=batch["pixels"])  # (B, P + n - 1, D)
        first = hidden.shape[1] - labels.shape[1]  # the last image position predicts the first text token
        loss_sum, num_tokens = chunked_cross_entropy(hidden[:, first:], model.lm_head.weight, labels)  # (B, n, D)
        return LossResult(loss_sum, num_tokens)

    def count_units(self, batch: NumpyBatch) -> int:
        """Caption tokens (and EOS) that carry a loss."""
        return int((batch["labels"] != IGNORE).sum())

    def split_metric(self) -> CaptionScores:
        """A fresh exact-match / CER accumulator for one validation split."""
        return CaptionScores(self.decode)

    def predict(self, model: nn.Module, batch: TensorBatch) -> tuple[LossResult, list[list[int]]]:
        """The batch's loss and each image's greedy caption (token ids, without EOS)."""
        return self(model, batch), greedy_captions(model, batch, self.eos_id)


@torch.no_grad()
def greedy_captions(model: nn.Module, batch: TensorBatch, eos_id: int,
                    max_new_tokens: int | None = None) -> list[list[int]]:
    """Greedy captions (token ids, EOS excluded) of a batch whose rows share one prompt (`labels` marks it)."""
    tokens, labels, pixels = batch["tokens"], batch["labels"], batch["pixels"]
    prompt_len = int((labels[0] == IGNORE).long().argmin())  # the prompt is the same for every row
    longest = int((labels != IGNORE).sum(dim=1).max())  # reference caption + EOS
    steps = max_new_tokens or longest
    batch_size = tokens.shape[0]
    cache = model.new_kv_cache(batch_size, model.arch.num_patches + prompt_len + steps + 1)
    logits = model(tokens[:, :prompt_len], pixels=pixels, kv_cache=cache)[:, -1]  # (B, V)
    captions: list[list[int]] = [[] for _ in range(batch_size)]
    done = torch.zeros(batch_size, dtype=torch.bool, device=tokens.device)
    for _ in range(steps):
        chosen = logits.argmax(dim=-1)  # (B,)
        for row, token in enumerate(chosen.tolist()):
            if not done[row] and token != eos_id:
                captions[row].append(token)
        done |= chosen == eos_id
        if bool(done.all()):
            break
        logits = model(chosen[:, None], kv_cache=cache)[:, -1]
    return captions


class CaptionScores:
    """Exact match (decoded strings, whitespace-trimmed) and character error rate over a validation split."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.references: list[str] = []
        self.hypotheses: list[str] = []

    def update(self, batch: TensorBatch, predictions: list[list[int]]) -> None:
        """Take in a batch's reference captions (from its labels) and the greedy captions."""
        for labels, caption in zip(batch["labels"].tolist(), predictions, strict=True):
            reference = [token for token in labels if token != IGNORE][:-1]  # the caption without its EOS
            self.references.append(self.decode(reference).strip())
            self.hypotheses.append(self.decode(caption).strip())

    def compute(self) -> dict[str, float]:
        """exact_match (fraction of images) and cer (character edits per reference character)."""
        if not self.references:
            return {}
        exact = sum(r == h for r, h in zip(self.references, self.hypotheses, strict=True)) / len(self.references)
        return {"exact_match": exact, "cer": character_error_rate(self.references, self.hypotheses)}


def character_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Character edits per reference character over all pairs (jiwer)."""
    import jiwer

    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r]
    if not pairs:
        return 0.0
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))

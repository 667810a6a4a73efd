"""The `token_classification` objective (NER): cross-entropy on labelled word pieces, entity F1 over the split.

The loss is summed over the pieces that carry a label (the first piece of each word, or every
piece with `ner.label_all_tokens`); its unit is `labels`. Entity-level precision, recall and F1
are not sums over units, so validation collects the predicted and gold tags of every word
(its first piece) through the objective's `SplitMetric` and scores them with `seqeval` in strict
IOB2 mode (an entity counts only with the right type and exact boundaries): `precision`,
`recall`, `f1` overall (micro) and `f1/TYPE`, `precision/TYPE`, `recall/TYPE`, `support/TYPE`
per entity type. `best/` and early stopping follow `f1`, highest first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tempering.data.ner.alignment import IGNORE_INDEX
from tempering.errors import UserError
from tempering.training.objective import BestMetric, LossResult, NumpyBatch, Objective, TensorBatch


class TokenClassification(Objective):
    """Cross-entropy of an encoder's label logits at the labelled pieces; entity F1 at validation."""

    name = "token_classification"
    unit = "labels"
    perplexity = False
    best_metric = BestMetric("f1", "max")

    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels

    def __call__(self, model: nn.Module, batch: TensorBatch) -> LossResult:
        """Summed loss over labelled pieces and their count."""
        return self.predict(model, batch)[0]

    def predict(self, model: nn.Module, batch: TensorBatch) -> tuple[LossResult, torch.Tensor]:
        """The LossResult and the (B, T) predicted label ids."""
        hidden = model.hidden_states(batch["input_ids"], batch.get("attention_mask"))  # (B, T, D)
        logits = model.classify(hidden)  # (B, T, num_labels)
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        return LossResult(loss, (labels != IGNORE_INDEX).sum()), logits.argmax(-1)

    def count_units(self, batch: NumpyBatch) -> int:
        """Pieces that carry a label."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def split_metric(self) -> EntityScores:
        """A fresh entity-F1 accumulator for one validation split."""
        return EntityScores(self.labels)


class EntityScores:
    """Gold and predicted tags of every word of a validation split, scored with seqeval (strict IOB2)."""

    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels
        self.gold: list[list[str]] = []
        self.predicted: list[list[str]] = []

    def update(self, batch: TensorBatch, predictions: torch.Tensor) -> None:
        """Take the word-level tags of one batch (at each word's first piece)."""
        starts = batch["word_starts"].cpu()
        gold, predicted = batch["labels"].cpu(), predictions.cpu()
        for row in range(starts.shape[0]):
            keep = starts[row]
            self.gold.append([self.labels[i] for i in gold[row][keep].tolist()])
            self.predicted.append([self.labels[i] for i in predicted[row][keep].tolist()])

    def compute(self) -> dict[str, float]:
        """precision, recall, f1 (micro over entities) and per type f1/T, precision/T, recall/T, support/T."""
        return entity_scores(self.gold, self.predicted)


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level scores of tag sequences in strict IOB2 mode (0 where nothing is predicted or found).

    The entities are seqeval's (`seqeval.scheme.Entities`, strict IOB2: type and both boundaries
    must match); the counting is seqeval's `classification_report` arithmetic (a test checks the
    two agree), done here because `seqeval.metrics` imports scikit-learn, ~5 s per process.
    """
    try:
        from seqeval.scheme import IOB2, Entities
    except ImportError as error:
        raise UserError("token classification scores entities with seqeval: pip install 'tempering[ner]' "
                        "(or pip install seqeval)") from error
    true_sets = [set(entities) for entities in Entities(gold, IOB2).entities]
    pred_sets = [set(entities) for entities in Entities(predicted, IOB2).entities]
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    for true, pred in zip(true_sets, pred_sets, strict=True):
        for entity in pred:
            counts.setdefault(entity.tag, [0, 0, 0])[1] += 1
            counts[entity.tag][0] += entity in true
        for entity in true:
            counts.setdefault(entity.tag, [0, 0, 0])[2] += 1
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    scores = dict(zip(("precision", "recall", "f1"), _prf(*total), strict=True))
    for kind in sorted(counts):
        precision, recall, f1 = _prf(*counts[kind])
        scores.update({f"f1/{kind}": f1, f"precision/{kind}": precision, f"recall/{kind}": recall,
                       f"support/{kind}": counts[kind][2]})
    return scores


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0 when undefined)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1

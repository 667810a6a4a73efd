"""Label sets and label maps: which labels a head has, and what continued training on new data does to them.

A fresh head's labels are ordered `O`, then per entity type (sorted) `B-` and `I-`, so the same
data always gives the same ids. Continuing a checkpoint on data whose label set differs is
where NER silently breaks in other tools (ids reordered, rows mismatched); here it is
`ner.label_mapping`: `strict` refuses and names the labels that differ, `merge` keeps the
checkpoint's labels at their ids and appends the new ones, whose head rows start fresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tempering.data.ner.scheme import OUTSIDE, entity_type, inside_of
from tempering.errors import UserError


def ordered_labels(tags: Iterable[str]) -> tuple[str, ...]:
    """The label list for a set of tags: O first, then by entity type, B- before I-."""
    found = set(tags)
    return tuple(sorted(found, key=lambda t: (t != OUTSIDE, entity_type(t) or "", t[:1] != "B")))


@dataclass(frozen=True)
class LabelPlan:
    """The head's labels for a run, and how they relate to the checkpoint's and the new data's."""

    labels: tuple[str, ...]  # by id: the checkpoint's first, in their order, then the new ones
    kept: tuple[str, ...]  # the checkpoint's labels (rows carried over)
    added: tuple[str, ...]  # labels the data brings that the checkpoint lacked (fresh rows)
    absent: tuple[str, ...]  # checkpoint labels the new data never uses

    def rows(self, counts: dict[str, int]) -> list[list]:
        """Table rows: id, label, status (old / new / old, absent from the new data), occurrences in the data."""
        def status(label: str) -> str:
            if label in self.added:
                return "new (fresh head row)"
            return "old, absent from the new data" if label in self.absent else "old"

        return [[index, label, status(label), f"{counts.get(label, 0):,}"] for index, label in enumerate(self.labels)]


def plan_labels(checkpoint_labels: tuple[str, ...], data_labels: tuple[str, ...], mapping: str,
                where: str) -> LabelPlan:
    """The labels a run continuing a checkpoint trains with; UserError under `strict` when the sets differ."""
    if not checkpoint_labels:  # a fresh head (MLM backbone, imported encoder, preset)
        return LabelPlan(labels=data_labels, kept=(), added=data_labels, absent=())
    only_checkpoint = [label for label in checkpoint_labels if label not in data_labels]
    only_data = [label for label in data_labels if label not in checkpoint_labels]
    if mapping == "strict" and (only_checkpoint or only_data):
        parts = [f"only in the data: {', '.join(only_data)}" if only_data else "",
                 f"only in the checkpoint: {', '.join(only_checkpoint)}" if only_checkpoint else ""]
        raise UserError(f"the data's labels differ from those of {where} ({'; '.join(p for p in parts if p)}); "
                        "set ner.label_mapping=merge to keep the checkpoint's labels at their ids and add the "
                        "new ones, or give data with the same labels")
    return LabelPlan(labels=checkpoint_labels + tuple(only_data), kept=checkpoint_labels, added=tuple(only_data),
                     absent=tuple(only_checkpoint))


def continuation_ids(labels: tuple[str, ...]) -> list[int]:
    """For each label id, the id of the label its later word pieces get under `ner.label_all_tokens` (B-X → I-X)."""
    index = {label: i for i, label in enumerate(labels)}
    return [index.get(inside_of(label), i) if label.startswith("B-") else i for i, label in enumerate(labels)]

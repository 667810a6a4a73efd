"""lm-eval's `custom_dataset` for tempering_next_sentence.yaml: the items, built locally (no download)."""

from __future__ import annotations


def load_items(**_metadata) -> dict:
    """{"test": Dataset} of next-sentence items (lm-eval passes the task's metadata, unused here)."""
    import datasets

    from tempering.evaluation.next_sentence import build_items

    return {"test": datasets.Dataset.from_list(build_items())}

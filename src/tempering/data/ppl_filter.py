"""Perplexity filter, the selection half: keep documents by a percentile band or a threshold of their scores.

The scores come from a language-model checkpoint (`tempering.evaluation.document_perplexity`,
which the CLI hands to `temper prep` as a callable): `data` never imports a model. A percentile
band keeps documents by rank, as CCNet splits head / middle / tail: `0:70` keeps the 70% with
the lowest perplexity, ties broken by input order, so the count kept is exact and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Texts → perplexity of each (what `temper prep --ppl-model` calls).
Scorer = Callable[[list[str]], np.ndarray]
REPORTED_PERCENTILES = (0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 100)


def keep_by_perplexity(scores: np.ndarray, *, band: tuple[float, float] | None = None,
                       max_perplexity: float | None = None) -> np.ndarray:
    """Boolean mask of the scores to keep: ranks within the percentile `band`, or scores <= `max_perplexity`."""
    keep = np.ones(len(scores), bool)
    if max_perplexity is not None:
        keep &= scores <= max_perplexity
    if band is not None and len(scores):
        order = np.argsort(scores, kind="stable")
        low, high = (round(percent / 100 * len(scores)) for percent in band)
        in_band = np.zeros(len(scores), bool)
        in_band[order[low:high]] = True
        keep &= in_band
    return keep


def score_percentiles(scores: np.ndarray) -> dict[str, float]:
    """The perplexity at each of REPORTED_PERCENTILES ("p50": ...), rounded to 4 significant digits."""
    if not len(scores):
        return {}
    values = np.percentile(scores, REPORTED_PERCENTILES)
    return {f"p{percent}": float(f"{value:.4g}") for percent, value in zip(REPORTED_PERCENTILES, values, strict=True)}

"""What each prep stage did, per source: documents and characters in, removed and out."""

from __future__ import annotations

import numpy as np


class StageCounts:
    """Documents and characters that entered and left one stage, per source (sources are indices into `names`)."""

    def __init__(self, names: list[str]):
        self.names = names
        self._totals = np.zeros((4, len(names)), np.int64)  # documents in, characters in, documents out, characters out

    def add(self, sources: np.ndarray, characters: np.ndarray, *, out: bool) -> None:
        """Count documents (their sources and lengths) going into, or out of, the stage."""
        row = 2 if out else 0
        self._totals[row] += np.bincount(sources, minlength=len(self.names))
        self._totals[row + 1] += np.bincount(sources, weights=characters, minlength=len(self.names)).astype(np.int64)

    def add_one(self, source: int, characters: int, *, out: bool) -> None:
        """Count one document going into, or out of, the stage."""
        row = 2 if out else 0
        self._totals[row, source] += 1
        self._totals[row + 1, source] += characters

    def by_source(self, *, removed: bool = True) -> dict[str, dict[str, int]]:
        """{source: {documents_in, characters_in, [documents_removed, characters_removed,] documents_out, characters_out}}."""
        result = {}
        for index, name in enumerate(self.names):
            docs_in, chars_in, docs_out, chars_out = (int(value) for value in self._totals[:, index])
            counts = {"documents_in": docs_in, "characters_in": chars_in}
            if removed:
                counts |= {"documents_removed": docs_in - docs_out, "characters_removed": chars_in - chars_out}
            result[name] = counts | {"documents_out": docs_out, "characters_out": chars_out}
        return result

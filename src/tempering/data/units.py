"""The documents prep works on ("units"): inputs read, cleaned (NFC, exact dedup) and chunked, numbered in input order.

Stages that need the whole corpus (near-dedup clusters, perplexity percentiles, limits)
cannot decide while streaming, and keeping the text would make memory grow with the corpus.
So the inputs are read again for each pass that needs text: reading, cleaning and chunking
are deterministic, so every pass sees the same units under the same numbers, and a pass
takes a boolean mask of the units it wants. The first pass counts what reading, cleaning
and chunking did; later passes are silent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempering.config.schema import PrepConfig
from tempering.data.chunking import Sizes, character_sizes, chunk_text
from tempering.data.cleaning import CleaningStats, DocumentCleaner, content_digest
from tempering.data.sources import SourceStats, iter_documents, warnings_silenced
from tempering.data.stage_counts import StageCounts

ByteCallback = Callable[[int], None]


@dataclass(frozen=True)
class Unit:
    """One document as prep writes it: its number, its source's index, its text and content digest."""

    index: int
    source: int
    text: str
    digest: bytes


class CorpusUnits:
    """Read → clean → chunk the input files, as often as the passes need."""

    def __init__(self, files: list[Path], file_sources: list[int], source_names: list[str], options: PrepConfig,
                 token_sizes: Sizes | None = None):
        self.files, self.file_sources, self.options = files, file_sources, options
        self.source_names = source_names
        self.sizes_of = token_sizes if options.chunk_unit == "tokens" and token_sizes else character_sizes
        self.source_stats: SourceStats | None = None  # counted by the first pass
        self.cleaning: CleaningStats | None = None
        self.chunking = StageCounts(source_names) if options.chunk_size else None
        self.num_units: int | None = None

    def iterate(self, wanted: np.ndarray | None = None, on_bytes: ByteCallback | None = None) -> Iterator[Unit]:
        """Yield the units (all, or those `wanted` marks), in input order; the first complete pass counts."""
        counting = self.source_stats is None
        source_stats, cleaner = SourceStats(), DocumentCleaner(dedup=self.options.dedup)
        index = 0
        with contextlib.nullcontext() if counting else warnings_silenced():
            for path, source in zip(self.files, self.file_sources, strict=True):
                for text in iter_documents([path], self.options, source_stats, on_bytes):
                    cleaned = cleaner.clean(text)
                    if cleaned is None:
                        continue
                    for piece, digest in self._chunks(cleaned, source, counting):
                        if wanted is None or wanted[index]:
                            yield Unit(index, source, piece, digest)
                        index += 1
        if counting:
            self.source_stats, self.cleaning, self.num_units = source_stats, cleaner.stats, index

    def _chunks(self, cleaned: tuple[str, bytes], source: int, counting: bool) -> list[tuple[str, bytes]]:
        text, digest = cleaned
        if not self.options.chunk_size:
            return [cleaned]
        chunks = chunk_text(text, self.options.chunk_size, self.sizes_of)
        if counting:
            self.chunking.add_one(source, len(text), out=False)
            for chunk in chunks:
                self.chunking.add_one(source, len(chunk), out=True)
        if len(chunks) == 1 and chunks[0] == text:
            return [cleaned]
        return [(chunk, content_digest(chunk.encode("utf-8"))) for chunk in chunks]

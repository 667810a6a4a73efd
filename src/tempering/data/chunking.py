"""Cut long documents into chunks of at most a target size, at paragraph, then line, then sentence, then word boundaries.

A document is cut at the coarsest boundary that gives pieces within the target; a piece still
too big is cut at the next finer boundary, down to words, and a single word longer than the
target stays whole (a chunk never ends inside a word). The pieces are then packed greedily,
in order, into chunks of at most the target size. Sizes are characters, or tokens of the
tokenizer the shards are written with (`sizes_of` counts a batch of pieces at once; a chunk's
size is the sum of its pieces' sizes, which for byte-level BPE cut before whitespace is its
token count or within a token or two of it). Whitespace at a chunk's edges is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Boundaries, coarsest first; a match is the separator that ends a piece (kept with the piece before).
BOUNDARIES = (
    re.compile(r"\n[^\S\n]*\n\s*"),  # blank line(s): paragraphs
    re.compile(r"\n\s*"),  # line ends
    re.compile(r"(?<=[.!?])[\"')\]]*\s+"),  # sentence ends
    re.compile(r"\s+"),  # words
)
# Texts longer than this are cut before their size is measured (bounds what one tokenizer call sees).
MAX_MEASURED_CHARS = 100_000

Sizes = Callable[[list[str]], list[int]]


def character_sizes(pieces: list[str]) -> list[int]:
    """The length of each piece in characters."""
    return [len(piece) for piece in pieces]


def chunk_text(text: str, max_size: int, sizes_of: Sizes = character_sizes) -> list[str]:
    """`text` cut into chunks of at most `max_size` (by `sizes_of`), never inside a word, edges stripped; or [text] if it fits."""
    fits = len(text) <= max_size if sizes_of is character_sizes else \
        len(text) <= MAX_MEASURED_CHARS and sizes_of([text])[0] <= max_size
    if fits:  # unchanged, so a corpus whose documents all fit gives the same tokens as without chunking
        return [text]
    return [chunk for chunk in (chunk.strip() for chunk in _chunks(text, max_size, sizes_of, level=0)) if chunk]


def _split(text: str, pattern: re.Pattern) -> list[str]:
    """`text` cut after each separator `pattern` matches (separators stay with the piece before)."""
    cuts = [match.end() for match in pattern.finditer(text) if 0 < match.end() < len(text)]
    return [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _chunks(text: str, max_size: int, sizes_of: Sizes, level: int) -> list[str]:
    """Chunks of a text too big for one: pieces at this level's boundaries, packed greedily in order.

    A piece too big itself is chunked at the next finer level, on its own: its chunks are never
    packed together with its neighbours, so a chunk never crosses a coarser boundary mid-piece.
    """
    parts = _split(text, BOUNDARIES[level])
    measured = [part for part in parts if len(part) <= MAX_MEASURED_CHARS]
    sizes = iter(sizes_of(measured)) if measured else iter(())
    chunks, current, current_size = [], [], 0
    for part in parts:
        size = next(sizes) if len(part) <= MAX_MEASURED_CHARS else max_size + 1
        if size <= max_size:
            if current and current_size + size > max_size:
                chunks.append("".join(current))
                current, current_size = [], 0
            current.append(part)
            current_size += size
            continue
        if current:
            chunks.append("".join(current))
            current, current_size = [], 0
        last_level = level == len(BOUNDARIES) - 1
        chunks.extend([part] if last_level else _chunks(part, max_size, sizes_of, level + 1))  # a lone long word stays whole
    if current:
        chunks.append("".join(current))
    return chunks

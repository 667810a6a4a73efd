"""Encode any text with bounded memory: very long texts go to the tokenizer in pieces.

A tokenizer's pre-tokenizer keeps a run of letters as one "word", and BPE then works on that
word whole: a 50 MB line of one word made the Rust side allocate gigabytes and abort. Texts
longer than MAX_PIECE_CHARS are therefore cut into pieces of at most that length, each cut
placed just before a whitespace character in the second half of the window when there is
one (for byte-level BPE, whose pre-tokenizer glues a space to the word after it, such a cut
gives exactly the tokens of the whole text), else at the window's end (the rare one-word
text, whose tokens may then differ at the cut). The ids of a text's pieces are concatenated,
so it stays one document.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

MAX_PIECE_CHARS = 100_000
WHITESPACE = (" ", "\n", "\t", "\r")


def split_long_text(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """`text` in pieces of at most `max_chars` characters, cut before whitespace where possible."""
    if len(text) <= max_chars:
        return [text]
    pieces, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = max(text.rfind(space, start + max_chars // 2, end) for space in WHITESPACE)
        end = cut if cut > start else end
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def encode_bounded(tokenizer: Tokenizer, texts: Sequence[str], *,
                   max_chars: int = MAX_PIECE_CHARS) -> tuple[list[list[int]], int]:
    """The ids of each text (no special tokens added), and how many texts had to be cut into pieces."""
    pieces: list[str] = []
    owners: list[int] = []
    num_cut = 0
    for index, text in enumerate(texts):
        parts = split_long_text(text, max_chars)
        num_cut += len(parts) > 1
        pieces.extend(parts)
        owners.extend([index] * len(parts))
    encodings = tokenizer.encode_batch_fast(pieces, add_special_tokens=False)
    if not num_cut:
        return [encoding.ids for encoding in encodings], 0
    ids: list[list[int]] = [[] for _ in texts]
    for owner, encoding in zip(owners, encodings, strict=True):
        ids[owner].extend(encoding.ids)
    return ids, num_cut

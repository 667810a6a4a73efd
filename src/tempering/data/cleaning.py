"""Document cleaning: Unicode NFC normalisation, empty-document removal, exact deduplication.

Lone UTF-16 surrogates (which JSON escapes can produce) become U+FFFD: they are not text.

Deduplication keeps the first occurrence of each distinct text, identified by a 128-bit
BLAKE2b hash of its NFC form (about 100 bytes of memory a document; collisions are
negligible at any corpus size a single machine prepares).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class CleaningStats:
    """Documents seen, kept, and removed per reason; UTF-8 bytes of the non-empty ones seen."""

    num_documents: int = 0
    num_kept: int = 0
    num_empty: int = 0
    num_duplicate: int = 0
    num_text_bytes: int = 0

    def removed(self) -> dict[str, int]:
        """Documents removed, by reason."""
        return {"empty": self.num_empty, "duplicate": self.num_duplicate}


def content_digest(data: bytes) -> bytes:
    """Return the 16-byte BLAKE2b hash that identifies a document's (NFC, UTF-8) content."""
    return hashlib.blake2b(data, digest_size=16).digest()


def normalize_text(text: str) -> str:
    """Return `text` in NFC with lone surrogates replaced, or "" when it is empty or whitespace only."""
    text = unicodedata.normalize("NFC", text)
    if not text or text.isspace():
        return ""
    if _LONE_SURROGATE.search(text):
        # Lone surrogates (from JSON "\ud800" escapes) are not text; the tokenizer rejects them.
        text = _LONE_SURROGATE.sub("\ufffd", text)
    return text


class DocumentCleaner:
    """Normalise documents to NFC and drop empty ones and exact duplicates, counting each."""

    def __init__(self, *, dedup: bool = True):
        self.dedup = dedup
        self.stats = CleaningStats()
        self._seen: set[bytes] = set()

    def clean(self, text: str) -> tuple[str, bytes] | None:
        """Return (normalised text, content digest), or None when the document is dropped."""
        self.stats.num_documents += 1
        text = normalize_text(text)
        if not text:
            self.stats.num_empty += 1
            return None
        data = text.encode("utf-8")
        self.stats.num_text_bytes += len(data)
        digest = content_digest(data)
        if self.dedup:
            if digest in self._seen:
                self.stats.num_duplicate += 1
                return None
            self._seen.add(digest)
        self.stats.num_kept += 1
        return text, digest

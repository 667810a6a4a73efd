"""Document cleaning: NFC, empty and duplicate removal, with counts per reason."""

from __future__ import annotations

import hashlib
import unicodedata

from tempering.data.cleaning import DocumentCleaner, normalize_text


def test_nfc_turns_a_decomposed_e_acute_into_the_composed_one():
    cleaned = DocumentCleaner().clean("cafe\u0301")
    assert cleaned is not None
    text, digest = cleaned
    assert text == "caf\u00e9"
    assert len(text) == 4
    assert digest == hashlib.blake2b("caf\u00e9".encode(), digest_size=16).digest()


def test_empty_and_duplicate_documents_are_dropped_and_counted():
    cleaner = DocumentCleaner()
    documents = ["one", "", "  \n\t", "two", "one", "cafe\u0301", "caf\u00e9", "two"]
    kept = [result[0] for result in map(cleaner.clean, documents) if result is not None]
    assert kept == ["one", "two", "caf\u00e9"]
    stats = cleaner.stats
    assert (stats.num_documents, stats.num_kept, stats.num_empty, stats.num_duplicate) == (8, 3, 2, 3)
    assert stats.removed() == {"empty": 2, "duplicate": 3}
    non_empty = [d for d in documents if d.strip()]
    assert stats.num_text_bytes == sum(len(unicodedata.normalize("NFC", d).encode()) for d in non_empty)


def test_dedup_off_keeps_duplicates():
    cleaner = DocumentCleaner(dedup=False)
    kept = [cleaner.clean(text) for text in ["x", "x", "x"]]
    assert [result[0] for result in kept] == ["x", "x", "x"]
    assert cleaner.stats.num_duplicate == 0


def test_lone_surrogates_become_replacement_characters():
    text, _ = DocumentCleaner().clean("a\ud800b")
    assert text == "a\ufffdb"


def test_normalize_text_returns_empty_for_whitespace_only():
    assert normalize_text(" \n\t ") == ""
    assert normalize_text("e\u0301 ") == "\u00e9 "

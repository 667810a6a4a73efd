"""Chunking: within the target size, at the coarsest boundary, never inside a word."""

from __future__ import annotations

from pydoc_data.topics import topics

from tempering.data.chunking import chunk_text
from tempering.tokenizer import train_tokenizer

TEXT = "\n\n".join(text for _, text in sorted(topics.items())[:6])


def test_chunks_fit_and_keep_every_word_in_order():
    for size in (50, 300, 2000):
        chunks = chunk_text(TEXT, size)
        assert all(len(chunk) <= size or " " not in chunk.strip() for chunk in chunks), size
        assert " ".join(chunks).split() == TEXT.split()


def test_paragraphs_stay_whole_when_they_fit():
    paragraphs = ["First paragraph, one sentence.", "Second one. It has two sentences.", "Third."]
    assert chunk_text("\n\n".join(paragraphs), 40) == paragraphs
    assert chunk_text("\n\n".join(paragraphs), 70) == ["\n\n".join(paragraphs[:2]), paragraphs[2]]


def test_a_long_paragraph_is_cut_at_sentences_then_words():
    text = "One short sentence. Another short sentence here! A third?"
    assert chunk_text(text, 25) == ["One short sentence.", "Another short sentence", "here!", "A third?"]


def test_a_word_longer_than_the_target_stays_whole():
    assert chunk_text("tiny " + "x" * 40 + " end", 10) == ["tiny", "x" * 40, "end"]


def test_a_document_that_fits_is_returned_unchanged():
    assert chunk_text("  keep   me  \n", 100) == ["  keep   me  \n"]


def test_token_chunks_fit_in_tokens(tmp_path):
    bundle = train_tokenizer([TEXT], 400, tmp_path / "tok", show_progress=False)

    def sizes(pieces):
        return [len(ids) for ids in bundle.encode_batch(pieces)]

    chunks = chunk_text(TEXT, 64, sizes)
    assert len(chunks) > 10
    assert all(len(bundle.encode(chunk)) <= 64 for chunk in chunks)
    assert " ".join(chunks).split() == TEXT.split()

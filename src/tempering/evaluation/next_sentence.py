"""A next-sentence multiple-choice task built from the sample corpus's held-out prose, for lm-eval.

Which of four sentences really follows this one? The text is the sample corpus's prose domain
(`pydoc_data.topics` and the standard library's docstrings), restricted to the documents
`temper sample-corpus` holds out for validation (same id hash, same 5 % fraction), so a model
pretrained on the sample corpus never saw it, and every machine with Python rebuilds it
without a download. Distractors are sentences from other held-out documents; the real one's
position is drawn per item.
`configs/lm_eval/tempering_next_sentence.yaml` hands these items to lm-eval.
"""

from __future__ import annotations

import random
import re

from tempering.data.sample_corpus import (
    default_stdlib_dir,
    iter_docstring_documents,
    iter_pydoc_topic_documents,
    iter_stdlib_files,
    split_documents,
)

HELD_OUT_FRACTION = 0.05  # `temper sample-corpus`'s default --val-fraction
NUM_CHOICES = 4
MAX_ITEMS = 400
MIN_SENTENCE_CHARS, MAX_SENTENCE_CHARS = 30, 300
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
PROSE_LETTER_SHARE = 0.9  # letters and spaces; code, grammar and tables fall below
MIN_WORDS = 5


def held_out_paragraphs() -> list[tuple[str, list[str]]]:
    """(document id, prose paragraphs) of each held-out prose document, whitespace normalised."""
    stdlib_files = list(iter_stdlib_files(default_stdlib_dir()))
    prose = [*iter_pydoc_topic_documents(), *iter_docstring_documents(stdlib_files)]
    _, held_out = split_documents(prose, HELD_OUT_FRACTION)
    return [(document["id"], [" ".join(block.split()) for block in re.split(r"\n\s*\n", document["text"])
                              if is_prose(block)]) for document in held_out]


def is_prose(block: str) -> bool:
    """A paragraph of sentences, not code, a doctest, a table or a heading."""
    text = " ".join(block.split())
    if not text or not text[0].isalpha() or text[-1] not in ".!?:" or ">>>" in text:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return letters / len(text) >= PROSE_LETTER_SHARE


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph's sentences (split after . ! ? before a capital or quote)."""
    return [s.strip() for s in SENTENCE_END.split(paragraph) if s.strip()]


def build_items(max_items: int = MAX_ITEMS) -> list[dict]:
    """Items {"id", "context", "choices", "label"}: context sentence, 4 candidate next sentences, the real one's index."""
    pairs, pool = [], []  # (topic, context, next); (topic, sentence)
    for topic, paragraphs in held_out_paragraphs():
        for paragraph in paragraphs:
            sentences = split_sentences(paragraph)
            pool.extend((topic, s) for s in sentences if _usable(s))
            pairs.extend((topic, a, b) for a, b in zip(sentences, sentences[1:], strict=False)
                         if _usable(a) and _usable(b))
    items = []
    for index, (topic, context, real) in enumerate(pairs[:max_items]):
        rng = random.Random(index)
        others = [s for t, s in pool if t != topic]
        choices = rng.sample(others, NUM_CHOICES - 1)
        label = rng.randrange(NUM_CHOICES)
        choices.insert(label, real)
        items.append({"id": index, "topic": topic, "context": context, "choices": choices, "label": label})
    return items


def _usable(sentence: str) -> bool:
    return MIN_SENTENCE_CHARS <= len(sentence) <= MAX_SENTENCE_CHARS and len(sentence.split()) >= MIN_WORDS

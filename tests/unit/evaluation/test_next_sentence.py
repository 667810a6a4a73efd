"""The local lm-eval task's items: held-out prose only, four distinct choices, the real next sentence labelled."""

from __future__ import annotations

from tempering.data.sample_corpus import (
    default_stdlib_dir,
    iter_docstring_documents,
    iter_pydoc_topic_documents,
    iter_stdlib_files,
    split_documents,
)
from tempering.evaluation.next_sentence import HELD_OUT_FRACTION, build_items, split_sentences


def test_items_come_from_held_out_prose_and_label_the_real_next_sentence():
    prose = [*iter_pydoc_topic_documents(), *iter_docstring_documents(list(iter_stdlib_files(default_stdlib_dir())))]
    train, held_out = split_documents(prose, HELD_OUT_FRACTION)
    text_of = {d["id"]: " ".join(d["text"].split()) for d in held_out}
    items = build_items()
    assert len(items) >= 200
    for item in items:
        assert item["topic"] in text_of  # never a document the sample corpus trains on
        assert len(set(item["choices"])) == 4 and 0 <= item["label"] < 4
        assert f"{item['context']} {item['choices'][item['label']]}" in text_of[item["topic"]]
    assert {item["label"] for item in items} == {0, 1, 2, 3}
    assert not {d["id"] for d in train} & {item["topic"] for item in items}


def test_sentences_split_after_full_stops_before_capitals():
    assert split_sentences('It is "None". Use it (rarely)! Is it? yes.') == ['It is "None".', "Use it (rarely)!",
                                                                              "Is it? yes."]

"""Label sets: deterministic order; strict refuses different sets naming them; merge keeps old ids."""

import pytest

from tempering.data.ner.labels import continuation_ids, ordered_labels, plan_labels
from tempering.errors import UserError

OLD = ("O", "B-ORG", "I-ORG", "B-PER", "I-PER")


def test_labels_are_ordered_o_then_by_type_b_before_i():
    assert ordered_labels(["I-PER", "B-ORG", "O", "B-PER", "I-ORG", "B-DATE"]) == \
        ("O", "B-DATE", "B-ORG", "I-ORG", "B-PER", "I-PER")


def test_strict_refuses_different_sets_naming_the_labels_that_differ():
    with pytest.raises(UserError, match=r"only in the data: B-GPE, I-GPE; only in the checkpoint: B-ORG, I-ORG\); "
                                        r"set ner.label_mapping=merge"):
        plan_labels(OLD, ("O", "B-GPE", "I-GPE", "B-PER", "I-PER"), "strict", "runs/ner/best")
    assert plan_labels(OLD, OLD, "strict", "x").labels == OLD


def test_merge_keeps_old_ids_appends_new_labels_and_names_absent_ones():
    plan = plan_labels(OLD, ("O", "B-GPE", "I-GPE", "B-PER", "I-PER"), "merge", "x")
    assert plan.labels == OLD + ("B-GPE", "I-GPE")
    assert plan.added == ("B-GPE", "I-GPE") and plan.absent == ("B-ORG", "I-ORG")
    rows = plan.rows({"B-GPE": 3, "O": 10})
    assert rows[1] == [1, "B-ORG", "old, absent from the new data", "0"]
    assert rows[5] == [5, "B-GPE", "new (fresh head row)", "3"]


def test_a_fresh_head_takes_the_data_labels():
    assert plan_labels((), OLD, "strict", "preset").labels == OLD


def test_continuation_maps_b_to_i_where_the_i_label_exists():
    assert continuation_ids(("O", "B-DATE", "B-PER", "I-PER")) == [0, 1, 3, 3]

"""Per-source limits: names, parsing, exact cuts in input order, the largest-share cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tempering.data.limits import (
    SourceLimit,
    apply_limit,
    fraction_cap,
    parse_dataset_limits,
    source_name,
)
from tempering.errors import UserError


def test_sources_are_named_by_folder_or_file_stem(tmp_path):
    (tmp_path / "corpus" / "web" / "deep").mkdir(parents=True)
    nested, top = tmp_path / "corpus" / "web" / "deep" / "a.jsonl", tmp_path / "corpus" / "pydocs_train.jsonl.gz"
    assert source_name(nested, [str(tmp_path / "corpus")]) == "web"  # first folder below the input dir
    assert source_name(top, [str(tmp_path / "corpus")]) == "corpus"  # directly in it: the dir itself
    assert source_name(top, [str(top)]) == "pydocs_train"  # a file named on the command line: its stem
    assert source_name(nested, [str(nested)]) == "a"
    assert source_name(Path("/x/notes.v2.txt"), []) == "notes.v2"


def test_limits_parse_with_docs_as_the_default_unit():
    limits = parse_dataset_limits("web=10, code = 500tokens,docs=3docs", ["web", "code", "docs"])
    assert limits == {"web": SourceLimit(10, "docs"), "code": SourceLimit(500, "tokens"), "docs": SourceLimit(3, "docs")}
    assert parse_dataset_limits(None, ["web"]) == {}


@pytest.mark.parametrize(("spec", "fragment"), [("web", "expected NAME=N"), ("web=-1", "expected NAME=N"),
                                                ("web=5bytes", "expected NAME=N"), ("wbe=5", "unknown source 'wbe'")])
def test_bad_limits_name_the_item(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_dataset_limits(spec, ["web", "code"])


def test_limits_cut_at_the_exact_count_in_input_order():
    owners = np.array([0, 1, 0, 0, 1, 0, 0])
    keep = np.array([True, True, False, True, True, True, True])
    apply_limit(keep, owners, 0, SourceLimit(2, "docs"), None)
    assert keep.tolist() == [True, True, False, True, True, False, False]
    tokens = np.array([5, 7, 3, 4, 3, 2, 9])
    keep = np.ones(7, bool)
    apply_limit(keep, owners, 0, SourceLimit(12, "tokens"), tokens)  # 5 + 3 + 4 = 12 fits, + 2 does not
    assert keep.tolist() == [True, True, True, True, True, False, False]


def test_fraction_cap_leaves_no_source_above_the_share():
    cap = fraction_cap([900, 50, 50], 0.5)
    assert cap == pytest.approx(100)  # capped: 100 of 200
    assert fraction_cap([300, 300, 400], 0.5) == pytest.approx(500)  # nobody above half: no cut
    assert fraction_cap([10, 20], 1.0) == float("inf")
    with pytest.raises(UserError, match="below 1/3"):
        fraction_cap([1, 1, 1], 0.3)

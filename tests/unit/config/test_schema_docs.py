"""The config surface is deliberate: keys are snapshotted, documented, and every shipped YAML loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tempering.cli import PREP_FLAGS, build_parser
from tempering.config import load_config
from tempering.config.loading import all_keys, schema_rows

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).parent


def test_config_keys_match_the_snapshot():
    # Adding or renaming a key is a deliberate change: update config_keys.txt and docs/config.md.
    expected = (HERE / "config_keys.txt").read_text().split()
    assert all_keys() == expected


def test_every_key_has_help():
    assert [key for key, _, _, help_text in schema_rows() if not help_text] == []


def test_docs_config_md_lists_every_key_with_its_default():
    docs = (REPO / "docs" / "config.md").read_text()
    for key, _, default, _ in schema_rows():
        assert f"| `{key}` |" in docs, f"{key} missing from docs/config.md (regenerate it, see its header)"
        assert f"| `{default}` |" in docs


def test_flags_point_at_real_keys():
    keys = set(all_keys())
    assert [flag.key for flag in PREP_FLAGS if flag.key not in keys] == []
    build_parser()  # builds help text from the schema for every flag


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_start_with_their_command(path):
    load_config(path)
    assert path.read_text().startswith("# temper "), f"{path.name} must start with the command that runs it"

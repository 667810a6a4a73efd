"""Per-source limits: sources named by folder or file stem, `name=N[docs|tokens]` caps and a largest share.

A source is what a user recognises in their input: a file named on the command line (or by a
glob) is its own source, named by its stem (`pydocs_train` for `pydocs_train.jsonl.gz`); the
files found in an input directory belong to the first folder below it (`corpus/web/a.jsonl`
under `--input corpus` is `web`), or to the directory itself when they sit directly in it. Limits are applied after every filter, in input order: a source capped
at N documents keeps its first N surviving documents; at N tokens, its first documents whose
tokens (EOS included) add up to at most N. `max_source_fraction` F then caps every source at
F of the total tokens left, by water-filling: the cap C solves C = F · Σ min(tokens_s, C).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tempering.errors import UserError

LIMIT_ITEM = re.compile(r"^\s*([^=,]+?)\s*=\s*(\d+)\s*(docs|tokens)?\s*$")


@dataclass(frozen=True)
class SourceLimit:
    """At most `count` documents or tokens of one source."""

    count: int
    unit: str  # "docs" or "tokens"


def source_name(file: Path, inputs: list[str]) -> str:
    """The source a file belongs to: the first folder below the input directory holding it (or that
    directory), else its stem."""
    for item in inputs:
        root = Path(os.path.abspath(Path(item).expanduser()))
        if root.is_dir() and file.is_relative_to(root):
            parts = file.relative_to(root).parts
            return parts[0] if len(parts) > 1 else root.name
    return file_stem(file)


def file_stem(file: Path) -> str:
    """A file's name without its format suffixes (`pydocs_train.jsonl.gz` → `pydocs_train`)."""
    name = file.name.removesuffix(".gz").removesuffix(".GZ")
    return os.path.splitext(name)[0]


def parse_dataset_limits(spec: str | None, names: list[str]) -> dict[str, SourceLimit]:
    """`name=N[docs|tokens],...` (docs when no unit is given) as limits per source; UserError names a bad item."""
    limits: dict[str, SourceLimit] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        match = LIMIT_ITEM.match(item)
        if not match:
            raise UserError(f"--dataset-limit {item.strip()!r}: expected NAME=N, NAME=Ndocs or NAME=Ntokens")
        name, count, unit = match.group(1), int(match.group(2)), match.group(3) or "docs"
        if name not in names:
            raise UserError(f"--dataset-limit names unknown source {name!r} (sources: {', '.join(sorted(set(names)))})")
        limits[name] = SourceLimit(count, unit)
    return limits


def apply_limit(keep: np.ndarray, owners: np.ndarray, source: int, limit: SourceLimit,
                tokens: np.ndarray | None) -> None:
    """Clear `keep` for the documents of `source` past its limit (in input order), in place."""
    members = np.flatnonzero(keep & (owners == source))
    if limit.unit == "docs":
        keep[members[limit.count:]] = False
        return
    totals = np.cumsum(tokens[members])
    keep[members[totals > limit.count]] = False


def fraction_cap(source_tokens: list[int], max_fraction: float) -> float:
    """The token cap C = F · Σ min(tokens_s, C) that leaves no source above `max_fraction` of the total."""
    if max_fraction >= 1.0 or not any(source_tokens):
        return float("inf")
    present = sum(1 for tokens in source_tokens if tokens)
    if max_fraction * present < 1.0:
        raise UserError(f"--max-source-fraction {max_fraction} is below 1/{present}: {present} sources cannot each "
                        f"hold at most that share of the total; raise it to at least {1 / present:.4g}")
    cap = max_fraction * sum(source_tokens)
    while True:  # decreasing; stops at the fixed point
        updated = max_fraction * sum(min(tokens, cap) for tokens in source_tokens)
        if updated >= cap - 1e-9:
            return cap
        cap = updated

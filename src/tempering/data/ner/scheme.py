"""The IOB2 tagging scheme: which tags are well formed, and repairing an `I-X` that starts an entity.

In IOB2 every entity starts with `B-X` and continues with `I-X`. An `I-X` after `O` or after
another type's tag is a scheme error (IOB1 data, or a slip in annotation); with
`ner.scheme_errors: repair` it becomes `B-X` (what seqeval's lenient mode would read it as),
with `error` the row is refused naming it. Written here: seqeval checks sequences at
scoring time but has no repair, and this is a dozen lines.
"""

from __future__ import annotations

import re

OUTSIDE = "O"
_TAG = re.compile(r"^([BI])-(\S.*)$")


def is_tag(tag: object) -> bool:
    """Whether `tag` is `O`, `B-TYPE` or `I-TYPE`."""
    return isinstance(tag, str) and (tag == OUTSIDE or _TAG.match(tag) is not None)


def entity_type(tag: str) -> str | None:
    """The entity type of a B-/I- tag (None for O)."""
    match = _TAG.match(tag)
    return match.group(2) if match else None


def inside_of(tag: str) -> str:
    """The I- tag that continues the entity a B- (or I-) tag belongs to; O stays O."""
    kind = entity_type(tag)
    return OUTSIDE if kind is None else f"I-{kind}"


def scheme_errors(tags: list[str]) -> list[int]:
    """Positions of I- tags that do not continue an entity of their own type (IOB2 violations)."""
    errors, previous = [], OUTSIDE
    for index, tag in enumerate(tags):
        if tag.startswith("I-") and entity_type(previous) != entity_type(tag):
            errors.append(index)
        previous = tag
    return errors


def repair(tags: list[str]) -> list[str]:
    """The tags with every IOB2 violation (an I-X that starts an entity) turned into B-X."""
    repaired = list(tags)
    for index in scheme_errors(tags):
        repaired[index] = "B-" + tags[index][2:]
    return repaired

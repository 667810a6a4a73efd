"""Image-caption JSON files (`[{"image": path, "caption": text}, ...]`, paths relative to the file) and their val siblings.

`temper prep --format images` writes `NAME.json` and, with `--val-fraction`, `NAME.val.json`
beside it; a training run that names `NAME.json` validates on `NAME.val.json` when it exists.
Records whose image file is missing are skipped and counted, never a crash mid-training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tempering.errors import UserError

VAL_SUFFIX = ".val.json"


@dataclass(frozen=True)
class CaptionRecord:
    """One image (an absolute path) and its caption."""

    image: Path
    caption: str


@dataclass
class ReadReport:
    """What reading caption files skipped."""

    missing_images: list[str] = field(default_factory=list)


def val_sibling(path: str | Path) -> Path:
    """`NAME.val.json` beside `NAME.json`."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".json") + VAL_SUFFIX)


def is_caption_file(path: str | Path) -> bool:
    """Whether `path` looks like an image-caption JSON file (a list of objects with image and caption)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
    return head.startswith("[") and ('"image"' in head or head.startswith("[]"))


def read_caption_file(path: str | Path, report: ReadReport | None = None) -> list[CaptionRecord]:
    """Every record of a caption JSON file; UserError names the file and the first malformed record."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (an image-caption JSON from `temper prep --format images`)")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise UserError(f"{path} holds a JSON {type(rows).__name__}; expected a list of "
                        '{"image": path, "caption": text} objects')
    records = []
    for index, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("image"), str) and isinstance(row.get("caption"), str)):
            raise UserError(f"{path}: record {index} is not an object with string fields image and caption")
        image = (path.parent / row["image"]).resolve()
        if not image.is_file():
            if report is not None:
                report.missing_images.append(str(image))
            continue
        records.append(CaptionRecord(image, row["caption"]))
    return records


def write_caption_file(path: Path, records: list[CaptionRecord]) -> None:
    """Write records as the seed's JSON, image paths relative to the file (POSIX separators)."""
    import os

    rows = [{"image": Path(os.path.relpath(r.image, path.parent.resolve())).as_posix(), "caption": r.caption}
            for r in records]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)

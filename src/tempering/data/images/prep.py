"""`temper prep --format images`: find images, pair them with captions, write the image-caption JSON.

Images are found recursively (`.png .jpg .jpeg .bmp .webp`). A caption comes from
`--caption-file` — `name<TAB>caption` or `name,caption` lines (.txt/.tsv/.csv, parsed by the
csv module so quoted captions may hold commas) or JSONL `{"image": name, "caption": text}` —
matched on the image's path relative to its input folder, else its file name; without a
caption file, from the image's sibling `NAME.txt`. Unreadable images (Pillow cannot decode
them), images without a caption and byte-identical duplicates (sha256) are skipped and
counted. `--val-fraction` sends images to `NAME.val.json` by a hash of their content, so the
split does not depend on file order.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tempering.data.images.pixels import IMAGE_EXTENSIONS, pillow
from tempering.data.images.records import CaptionRecord, val_sibling, write_caption_file
from tempering.errors import UserError
from tempering.tracking.console import console, print_table

CAPTION_FILE_FORMATS = (".txt", ".tsv", ".csv", ".jsonl")


@dataclass
class ImagePrepReport:
    """What `prep_images` wrote and skipped."""

    counts: Counter = field(default_factory=Counter)  # train, val, unreadable, no_caption, duplicate
    examples: dict[str, str] = field(default_factory=dict)  # a first skipped path per reason


def discover_images(inputs: list[str | Path]) -> list[tuple[Path, Path]]:
    """(image, its input root) for every image file under `inputs` (files or folders), sorted; UserError if none."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += [(path, item) for path in sorted(item.rglob("*"))
                      if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()]
        elif item.is_file():
            found.append((item, item.parent))
        else:
            raise UserError(f"--input {item} does not exist")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {', '.join(map(str, inputs))}")
    return found


def read_caption_table(path: str | Path) -> dict[str, str]:
    """Captions by image name from a TAB/comma-separated or JSONL caption file; UserError names the bad line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--caption-file {path} does not exist")
    if path.suffix.lower() not in CAPTION_FILE_FORMATS:
        raise UserError(f"--caption-file {path}: expected one of {', '.join(CAPTION_FILE_FORMATS)}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if path.suffix.lower() == ".jsonl":
        return dict(_jsonl_row(path, number, line) for number, line in enumerate(lines, 1) if line.strip())
    captions = {}
    for number, row in enumerate(csv.reader(lines, delimiter=_delimiter(lines)), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip():
            raise UserError(f"{path}:{number}: expected NAME<TAB>CAPTION or NAME,CAPTION")
        captions[row[0].strip()] = ",".join(row[1:]).strip()
    return captions


def _delimiter(lines: list[str]) -> str:
    first = next((line for line in lines if line.strip()), "")
    return "\t" if "\t" in first else ","


def _jsonl_row(path: Path, number: int, line: str) -> tuple[str, str]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    if not (isinstance(row, dict) and isinstance(row.get("image"), str) and isinstance(row.get("caption"), str)):
        raise UserError(f'{path}:{number}: expected {{"image": NAME, "caption": TEXT}}')
    return row["image"], row["caption"]


def prep_images(inputs: list[str | Path], output: str | Path, *, caption_file: str | Path | None = None,
                val_fraction: float = 0.0) -> ImagePrepReport:
    """Write `output` (and its `.val.json` sibling when `val_fraction` > 0); return what was kept and skipped."""
    output = Path(output)
    if output.suffix != ".json":
        raise UserError(f"--output {output}: images prep writes a .json file (e.g. images.json)")
    table = read_caption_table(caption_file) if caption_file else None
    report, seen = ImagePrepReport(), set()
    splits: dict[str, list[CaptionRecord]] = {"train": [], "val": []}
    for image, root in discover_images(inputs):
        caption = _caption_for(image, root, table)
        digest = _readable_digest(image)
        reason = "unreadable" if digest is None else "no_caption" if not caption else \
            "duplicate" if digest in seen else None
        if reason:
            report.counts[reason] += 1
            report.examples.setdefault(reason, str(image))
            continue
        seen.add(digest)
        split = "val" if int(digest[:8], 16) / 0xFFFFFFFF < val_fraction else "train"
        splits[split].append(CaptionRecord(image.resolve(), caption))
        report.counts[split] += 1
    if not splits["train"]:
        raise UserError(f"no image left for training under {', '.join(map(str, inputs))} "
                        f"({_skipped_text(report)}); check the captions and --val-fraction")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_caption_file(output, splits["train"])
    if splits["val"]:
        write_caption_file(val_sibling(output), splits["val"])
    elif val_sibling(output).exists():  # a stale split from an earlier prep would be read as this one's
        val_sibling(output).unlink()
    _print_report(report, output)
    return report


def _caption_for(image: Path, root: Path, table: dict[str, str] | None) -> str | None:
    """The image's caption: from the table by relative path or file name, else its sibling .txt."""
    if table is not None:
        caption = table.get(image.relative_to(root).as_posix(), table.get(image.name))
        return caption.strip() if caption else None
    sibling = image.with_suffix(".txt")
    return sibling.read_text(encoding="utf-8", errors="replace").strip() if sibling.is_file() else None


def _readable_digest(image: Path) -> str | None:
    """sha256 of the image file, or None when Pillow cannot decode it."""
    image_module = pillow()
    try:
        with image_module.open(image) as opened:
            opened.load()
    except (OSError, SyntaxError, ValueError, image_module.DecompressionBombError):
        return None
    return hashlib.sha256(image.read_bytes()).hexdigest()


def _skipped_text(report: ImagePrepReport) -> str:
    skipped = {k: report.counts[k] for k in ("unreadable", "no_caption", "duplicate") if report.counts[k]}
    return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in skipped.items()) or "nothing skipped"


def _print_report(report: ImagePrepReport, output: Path) -> None:
    rows = [[reason.replace("_", " "), report.counts[reason], report.examples.get(reason, "")]
            for reason in ("train", "val", "unreadable", "no_caption", "duplicate")]
    print_table(f"images prep → {output}", ["images", "count", "first skipped"], rows, to_stdout=False)
    console.print(f"wrote {report.counts['train']} training images to {output}"
                  + (f" and {report.counts['val']} to {val_sibling(output)}" if report.counts["val"] else "")
                  + f"; skipped {_skipped_text(report)}")

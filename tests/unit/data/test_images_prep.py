"""`temper prep --format images`: discovery, the three caption-file forms, sibling .txt, skipped images counted."""

import json

import pytest
from PIL import Image

from tempering.data.images.prep import prep_images, read_caption_table
from tempering.data.images.records import read_caption_file, val_sibling
from tempering.errors import UserError


def picture(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Five distinct images in nested folders, one byte-identical copy, one broken file, one without caption."""
    root = tmp_path / "photos"
    picture(root / "a.png", (255, 0, 0))
    picture(root / "deep" / "b.jpg", (0, 255, 0))
    picture(root / "deep" / "er" / "c.bmp", (0, 0, 255))
    picture(root / "d.webp", (9, 9, 9))
    picture(root / "e.jpeg", (200, 200, 0))
    (root / "copy").mkdir()
    (root / "copy" / "a_again.png").write_bytes((root / "a.png").read_bytes())
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    picture(root / "uncaptioned.png", (1, 2, 3))
    return root


CAPTIONS = {"a.png": "red, bright", "deep/b.jpg": "green", "c.bmp": "blue", "d.webp": "grey", "e.jpeg": "olive",
            "a_again.png": "red copy", "broken.png": "broken"}


def caption_file(tmp_path, form):
    if form == "jsonl":
        path = tmp_path / "captions.jsonl"
        path.write_text("".join(json.dumps({"image": k, "caption": v}) + "\n" for k, v in CAPTIONS.items()))
    elif form == "tsv":
        path = tmp_path / "captions.txt"
        path.write_text("".join(f"{k}\t{v}\n" for k, v in CAPTIONS.items()))
    else:
        path = tmp_path / "captions.csv"
        path.write_text("".join(f'{k},"{v}"\n' for k, v in CAPTIONS.items()))
    return path


@pytest.mark.parametrize("form", ["jsonl", "tsv", "csv"])
def test_images_are_found_recursively_and_paired_in_every_caption_file_form(folder, tmp_path, form):
    output = tmp_path / "out" / "images.json"
    report = prep_images([folder], output, caption_file=caption_file(tmp_path, form))
    records = read_caption_file(output)
    by_name = {r.image.name: r.caption for r in records}
    assert by_name == {"a.png": "red, bright", "b.jpg": "green", "c.bmp": "blue", "d.webp": "grey",
                       "e.jpeg": "olive"}
    assert (report.counts["train"], report.counts["duplicate"], report.counts["unreadable"],
            report.counts["no_caption"]) == (5, 1, 1, 1)
    rows = json.loads(output.read_text())
    assert all(not row["image"].startswith("/") for row in rows)  # relative to the JSON


def test_sibling_txt_captions_and_a_content_hash_val_split(folder, tmp_path):
    for image in folder.rglob("*"):
        if image.suffix in {".png", ".jpg", ".bmp", ".webp", ".jpeg"} and image.stem != "uncaptioned":
            image.with_suffix(".txt").write_text(f"  caption of {image.stem}\n")
    output = tmp_path / "images.json"
    report = prep_images([folder], output, val_fraction=0.5)
    train, val = read_caption_file(output), read_caption_file(val_sibling(output))
    assert len(train) + len(val) == 5 and train and val
    assert {r.caption for r in train + val} == {f"caption of {s}" for s in "abcde"}
    assert report.counts["no_caption"] == 1 and report.counts["duplicate"] == 1
    again = tmp_path / "again.json"
    prep_images([folder], again, val_fraction=0.5)
    assert [r.image for r in read_caption_file(val_sibling(again))] == [r.image for r in val]


def test_malformed_caption_files_and_empty_inputs_are_user_errors(folder, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "caption": "x"}\n{"image": 3}\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        read_caption_table(bad)
    one_column = tmp_path / "bad.csv"
    one_column.write_text("a.png\n")
    with pytest.raises(UserError, match="bad.csv:1"):
        read_caption_table(one_column)
    with pytest.raises(UserError, match="no image left for training"):
        prep_images([folder], tmp_path / "x.json")  # no caption file and no sibling .txt
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        prep_images([empty], tmp_path / "y.json")

"""The built-in image-caption sets: deterministic by seed, held-out combinations only in validation."""

import hashlib
import re

from tempering.data.images.records import read_caption_file, val_sibling
from tempering.data.images.sample import COLOURS, HELD_OUT, SHAPES, write_sample_images

PHRASE = re.compile(rf"(?:small|large) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sets_are_a_function_of_the_seed(tmp_path):
    write_sample_images(tmp_path / "a", num_images=30, seed=7)
    write_sample_images(tmp_path / "b", num_images=30, seed=7)
    write_sample_images(tmp_path / "c", num_images=30, seed=8)
    assert digests(tmp_path / "a") == digests(tmp_path / "b") != digests(tmp_path / "c")


def test_held_out_combinations_appear_only_in_validation_and_words_are_unseen(tmp_path):
    summary = write_sample_images(tmp_path, num_images=200, seed=0)
    assert summary == {"scenes": {"train": 200, "val": 20}, "words": {"train": 200, "val": 20}}
    train = read_caption_file(tmp_path / "scenes.json")
    val = read_caption_file(val_sibling(tmp_path / "scenes.json"))
    assert not any(set(PHRASE.findall(r.caption)) & HELD_OUT for r in train)
    assert all(set(PHRASE.findall(r.caption)) & HELD_OUT for r in val)
    seen = {pair for r in train for pair in PHRASE.findall(r.caption)}
    assert {(c, s) for c in COLOURS for s in SHAPES} - HELD_OUT <= seen
    assert any(" left of " in r.caption for r in train) and any(" above " in r.caption for r in train)
    train_words = {r.caption for r in read_caption_file(tmp_path / "words.json")}
    val_words = {r.caption for r in read_caption_file(val_sibling(tmp_path / "words.json"))}
    assert val_words and not val_words & train_words
    assert all(re.fullmatch(r"[a-z]{3,7}", w) for w in train_words | val_words)


def test_recolour_paints_training_shapes_off_palette_and_leaves_validation_alone(tmp_path):
    import numpy as np
    from PIL import Image

    from tempering.data.images.sample import BACKGROUND, OFF_PALETTE_DISTANCE, OTHER

    write_sample_images(tmp_path / "plain", num_images=60, seed=0)
    write_sample_images(tmp_path / "rc", num_images=60, seed=0, recolour=0.5)
    plain = read_caption_file(tmp_path / "plain" / "scenes.json")
    train = read_caption_file(tmp_path / "rc" / "scenes.json")
    for painted, original in zip(train, plain, strict=True):  # the same scenes; only colour words became OTHER
        assert all(a == b or (a == OTHER and b in COLOURS)
                   for a, b in zip(painted.caption.split(), original.caption.split(), strict=True))
    assert any(f" {OTHER} " in r.caption for r in train) and not any(
        set(PHRASE.findall(r.caption)) & HELD_OUT for r in train)
    assert digests(tmp_path / "plain" / "scenes" / "val") == digests(tmp_path / "rc" / "scenes" / "val")
    anchors = np.array([*COLOURS.values(), BACKGROUND], dtype=float)
    for record in train:
        if record.caption == f"a large {OTHER} square":  # one flat colour in the middle of a large square
            pixels = np.asarray(Image.open(record.image).convert("RGB"), dtype=float).reshape(-1, 3)
            painted = pixels[np.linalg.norm(pixels - BACKGROUND, axis=1) > 1]
            assert np.linalg.norm(anchors - np.median(painted, axis=0), axis=1).min() >= OFF_PALETTE_DISTANCE - 1

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

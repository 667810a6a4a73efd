"""ASR transcript normalisation: case, punctuation, numbers, apostrophes, accents."""

from __future__ import annotations

import pytest

from tempering.data.audio.text import normalize_transcript


@pytest.mark.parametrize(("raw", "expected"), [
    ("Hello, World!", "hello world"),
    ("It's the dog's bone.", "it's the dog's bone"),
    ("'Quoted' words", "quoted words"),
    ("In 1984 we had 3.5 cats", "in one thousand nine hundred and eighty four we had three point five cats"),
    ("the 2nd time, 1,000 people", "the second time one thousand people"),
    ("Café déjà-vu", "cafe deja vu"),
    ("rock & roll 100%", "rock and roll one hundred percent"),
    ("  spaced\tout \n text ", "spaced out text"),
    ("It\u2019s curly", "it's curly"),
])
def test_normalize_transcript(raw, expected):
    assert normalize_transcript(raw) == expected


def test_characters_outside_a_custom_alphabet_are_dropped():
    assert normalize_transcript("Abc xyz!", alphabet="abc ") == "abc"

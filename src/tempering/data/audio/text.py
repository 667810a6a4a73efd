"""Transcript normalisation for speech recognition: the text a CTC model over `a`–`z`, `'` and space can spell.

Steps, in order: Unicode NFKC; curly quotes become `'`; numbers become words with `num2words`
(`1984` → "one thousand, nine hundred and eighty-four", `3.5` → "three point five", `2nd` →
"second"; thousands separators dropped first); `&` → " and ", `%` → " percent ", `+` → " plus ",
`@` → " at "; lower case; accents dropped (`café` → "cafe"); hyphens, slashes and underscores
become spaces; every other character outside the alphabet is removed, except that an
apostrophe survives only inside a word (`it's`, not `'quoted'`); runs of spaces become one.
The alphabet is configurable (`speech.alphabet`); characters outside it are dropped.
"""

from __future__ import annotations

import re
import unicodedata

DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz' "
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at "}
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'"})


def normalize_transcript(text: str, alphabet: str = DEFAULT_ALPHABET) -> str:
    """`text` as an ASR target: spelled-out numbers, lower case, only `alphabet`'s characters, single spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _spell_numbers(_THOUSANDS.sub("", text))
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    text = _strip_accents(text.lower())
    text = re.sub(r"[-_/\s\u2013\u2014]+", " ", text)
    allowed = set(alphabet)
    kept = "".join(c if c in allowed else (" " if c in ".,;:!?()[]{}\"" and " " in allowed else "") for c in text)
    if "'" in allowed:  # an apostrophe only between two letters
        kept = re.sub(r"(?<![^\W\d_])'|'(?![^\W\d_])", "", kept)
    return re.sub(r" +", " ", kept).strip()


def _spell_numbers(text: str) -> str:
    from num2words import num2words

    text = _ORDINAL.sub(lambda m: f" {num2words(int(m.group(1)), to='ordinal')} ", text)
    return _NUMBER.sub(lambda m: f" {num2words(float(m.group()) if '.' in m.group() else int(m.group()))} ", text)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))

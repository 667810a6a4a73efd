"""A short, stable identity for a tokenizer: which ids mean which strings.

Checkpoints and token shards record this fingerprint so that a model is never paired
with shards or a tokenizer that number tokens differently. It hashes only what fixes
the id mapping (model type, vocab, merges, added tokens), re-serialised canonically, so
it ignores JSON formatting, file paths, and fields newer `tokenizers` releases add to
the pre-tokenizer or decoder sections.
"""

from __future__ import annotations

import hashlib
import json

from tokenizers import Tokenizer

FINGERPRINT_CHARS = 16


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """Return the first 16 hex chars of a sha256 over the tokenizer's vocab, merges and specials."""
    state = json.loads(tokenizer.to_str())
    model = state.get("model") or {}
    canonical = {
        "type": model.get("type"),
        "vocab": _canonical_vocab(model.get("vocab")),
        "merges": [_canonical_merge(merge) for merge in model.get("merges") or []],
        "added_tokens": sorted(
            (token["id"], token["content"], bool(token.get("special")))
            for token in state.get("added_tokens") or []
        ),
    }
    payload = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def _canonical_vocab(vocab: object) -> object:
    # BPE and WordPiece store {token: id}; Unigram stores [[piece, score], ...] already ordered.
    if isinstance(vocab, dict):
        return sorted(([token, index] for token, index in vocab.items()), key=lambda pair: pair[1])
    return vocab


def _canonical_merge(merge: str | list[str]) -> list[str]:
    # Older tokenizers files write a merge as "a b", newer ones as ["a", "b"].
    return merge.split(" ", 1) if isinstance(merge, str) else list(merge)

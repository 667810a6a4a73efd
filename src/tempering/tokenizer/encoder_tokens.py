"""The special tokens an encoder needs: sequence start and end, padding, and the mask of masked-LM training.

A BERT-style tokenizer names them `cls_token`, `sep_token`, `pad_token` and `mask_token` in its
`tokenizer_config.json`; a Tempering tokenizer has `<|bos|>`, `<|eos|>` and `<|pad|>`, and gets a
`<|mask|>` special token added (at the end of the vocabulary, so no id moves) the first time a
masked-LM run needs one. The mask token is recorded in the run tokenizer's `tokenizer_config.json`,
so `transformers`' fill-mask pipeline finds it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tempering.errors import UserError
from tempering.tokenizer.bundle import TokenizerBundle, read_special_token_config
from tempering.tokenizer.files import CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE

MASK = "<|mask|>"


@dataclass(frozen=True)
class EncoderTokens:
    """Token ids an encoder's inputs are built from."""

    start_id: int  # [CLS] / <|bos|>: first token of every sequence
    end_id: int  # [SEP] / <|eos|>: last token of every sequence
    pad_id: int
    mask_id: int | None  # [MASK] / <|mask|>; None until a masked-LM run adds one


def encoder_tokens(bundle: TokenizerBundle) -> EncoderTokens:
    """The start, end, pad and mask ids of a tokenizer (BERT's names first, then Tempering's)."""
    config = read_special_token_config(Path(bundle.path)) if bundle.path and Path(bundle.path).is_dir() else {}
    start = _configured_id(bundle, config, "cls_token")
    start = bundle.bos_id if start is None else start
    if start is None:
        raise UserError(f"tokenizer {bundle.path} has neither a cls_token nor a bos token to start a sequence with")
    end = _configured_id(bundle, config, "sep_token")
    mask = _configured_id(bundle, config, "mask_token")
    pad = bundle.pad_id if bundle.pad_id is not None else bundle.eos_id
    return EncoderTokens(start_id=start, end_id=bundle.eos_id if end is None else end, pad_id=pad,
                         mask_id=bundle.tokenizer.token_to_id(MASK) if mask is None else mask)


def with_mask_token(bundle: TokenizerBundle) -> tuple[TokenizerBundle, bool]:
    """The tokenizer with a mask token (`<|mask|>` added when it has none) and whether one was added."""
    if encoder_tokens(bundle).mask_id is not None:
        return bundle, False
    return bundle.with_special_tokens([MASK]), True


def write_mask_token(directory: str | Path, token: str = MASK) -> None:
    """Name `token` as `mask_token` in a tokenizer directory's config files (atomically each)."""
    for name in (CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE):
        file = Path(directory) / name
        config = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        config["mask_token"] = token
        extra = config.get("additional_special_tokens")
        if isinstance(extra, list) and token in extra:
            extra.remove(token)
        descriptor, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        os.replace(temporary, file)


def _configured_id(bundle: TokenizerBundle, config: dict, key: str) -> int | None:
    value = config.get(key)
    content = value.get("content") if isinstance(value, dict) else value
    return bundle.tokenizer.token_to_id(content) if isinstance(content, str) else None

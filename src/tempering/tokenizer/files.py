"""Write a tokenizer directory that both Tempering and Hugging Face `transformers` load.

A directory holds `tokenizer.json` (the `tokenizers` model itself), `tokenizer_config.json`
and `special_tokens_map.json` (what `transformers.AutoTokenizer` reads to set bos/eos/pad).
Saving a standalone directory is atomic: files go to a temporary sibling that is renamed
into place, so an interrupted save leaves the previous directory or none, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from tempering.errors import UserError
from tempering.tokenizer.special import BOS, EOS, PAD, SPECIAL_TOKENS

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
TOKENIZER_FILES = frozenset({TOKENIZER_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE})
FINGERPRINT_KEY = "tempering_fingerprint"

# transformers' own "no limit" value; sequence length is the model's business, not the tokenizer's.
VERY_LARGE_MODEL_MAX_LENGTH = int(1e30)


def write_tokenizer_files(tokenizer: Tokenizer, directory: Path, *, fingerprint: str,
                          specials: tuple[str | None, str, str | None] = (BOS, EOS, PAD)) -> None:
    """Write the three tokenizer files into an existing directory (e.g. a checkpoint being built).

    `specials` are the (bos, eos, pad) token strings: Tempering's own for tokenizers trained
    here, the model's for an imported tokenizer (whose vocabulary lacks ours).
    """
    bos, eos, pad = specials
    special_tokens_map = {
        **({"bos_token": bos} if bos else {}),
        "eos_token": eos,
        **({"pad_token": pad} if pad else {}),
        "additional_special_tokens": [token for token in SPECIAL_TOKENS if token not in specials
                                      and tokenizer.token_to_id(token) is not None],
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens_map,
        "model_max_length": VERY_LARGE_MODEL_MAX_LENGTH,
        "add_bos_token": False,
        "add_eos_token": False,
        # True would rewrite " ." as "." when decoding and break the encode/decode round trip.
        "clean_up_tokenization_spaces": False,
        FINGERPRINT_KEY: fingerprint,
    }
    tokenizer.save(str(directory / TOKENIZER_FILE))
    _write_json(directory / CONFIG_FILE, config)
    _write_json(directory / SPECIAL_TOKENS_MAP_FILE, special_tokens_map)


def check_output_dir(output_dir: Path, *, overwrite: bool) -> None:
    """Raise UserError unless saving a tokenizer to `output_dir` can work and lose nothing of the user's."""
    if not output_dir.exists():
        _check_can_create(output_dir)
        return
    if not output_dir.is_dir():
        raise UserError(f"{output_dir} is a file, not a directory; choose another tokenizer output directory")
    entries = sorted(entry.name for entry in output_dir.iterdir())
    if not entries:
        return
    if not _is_our_tokenizer_dir(output_dir, entries):
        raise UserError(
            f"{output_dir} already holds files that are not a Tempering tokenizer "
            f"({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}); choose an empty or new directory"
        )
    if not overwrite:
        raise UserError(
            f"{output_dir} already holds a tokenizer; choose a new directory or allow overwriting it (--overwrite)"
        )


def _check_can_create(output_dir: Path) -> None:
    """The nearest existing folder above `output_dir` must be a writable directory (checked before any work)."""
    parent = output_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create {output_dir}: {parent} is a file, not a directory; choose another output")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {output_dir}: {parent} is not writable; choose another output")


def save_tokenizer_dir(tokenizer: Tokenizer, output_dir: Path, *, fingerprint: str, overwrite: bool,
                       specials: tuple[str | None, str, str | None] = (BOS, EOS, PAD)) -> None:
    """Save a standalone tokenizer directory atomically (temporary sibling, then rename)."""
    check_output_dir(output_dir, overwrite=overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        write_tokenizer_files(tokenizer, staging, fingerprint=fingerprint, specials=specials)
        _replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_dir(staging: Path, output_dir: Path) -> None:
    if not output_dir.exists():
        os.rename(staging, output_dir)
        return
    # POSIX cannot atomically swap two non-empty directories; move the old one aside first so a
    # crash in between leaves it recoverable under a hidden name rather than deleted.
    retired = tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent)
    os.rename(output_dir, retired)  # replaces the empty placeholder directory
    os.rename(staging, output_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _is_our_tokenizer_dir(directory: Path, entries: list[str]) -> bool:
    if not set(entries) <= TOKENIZER_FILES or CONFIG_FILE not in entries:
        return False
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        return isinstance(config, dict) and FINGERPRINT_KEY in config
    return False


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

"""A loaded tokenizer with the ids and identity the rest of Tempering needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from tokenizers import Tokenizer

from tempering.errors import UserError
from tempering.json_files import read_json_object
from tempering.tokenizer.bounded import encode_bounded
from tempering.tokenizer.files import (
    CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_FILE,
    save_tokenizer_dir,
    write_tokenizer_files,
)
from tempering.tokenizer.fingerprint import tokenizer_fingerprint
from tempering.tokenizer.special import BOS, EOS, PAD

TRAIN_HINT = "train one with `temper tokenizer train`"


@dataclass
class TokenizerBundle:
    """A `tokenizers.Tokenizer` plus its fingerprint, vocab size and bos/eos/pad ids."""

    tokenizer: Tokenizer
    path: Path | None
    fingerprint: str
    vocab_size: int
    bos_id: int | None
    eos_id: int
    pad_id: int | None

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, path: Path | None = None) -> TokenizerBundle:
        """Wrap a tokenizer that carries Tempering's special tokens (as trained by us)."""
        eos_id = tokenizer.token_to_id(EOS)
        if eos_id is None:
            raise UserError(f"tokenizer has no {EOS} token; {TRAIN_HINT}", where=str(path) if path else None)
        return cls(tokenizer=tokenizer, path=path, fingerprint=tokenizer_fingerprint(tokenizer),
                   vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                   bos_id=tokenizer.token_to_id(BOS), eos_id=eos_id, pad_id=tokenizer.token_to_id(PAD))

    def with_special_tokens(self, tokens: list[str]) -> TokenizerBundle:
        """This tokenizer with `tokens` added as special tokens; bos/eos/pad keep their ids."""
        self.tokenizer.add_special_tokens(tokens)
        return replace(self, fingerprint=tokenizer_fingerprint(self.tokenizer),
                       vocab_size=self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Return the token ids of `text`, with no bos/eos added (special-token strings map to their ids)."""
        return encode_bounded(self.tokenizer, [text])[0][0]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Encode many texts in parallel (the `tokenizers` thread pool); same ids as `encode` on each."""
        return encode_bounded(self.tokenizer, list(texts))[0]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Turn ids back into text; special tokens are kept unless asked otherwise."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Save as a standalone tokenizer directory (atomic) and remember it as `path`."""
        directory = Path(directory)
        save_tokenizer_dir(self.tokenizer, directory, fingerprint=self.fingerprint, overwrite=overwrite,
                           specials=self.special_tokens)
        self.path = directory
        return directory

    def write_files(self, directory: str | Path) -> None:
        """Write the tokenizer files into an existing directory whose atomicity the caller owns."""
        write_tokenizer_files(self.tokenizer, Path(directory), fingerprint=self.fingerprint,
                              specials=self.special_tokens)

    @property
    def special_tokens(self) -> tuple[str | None, str, str | None]:
        """The (bos, eos, pad) token strings (None where the tokenizer has no such token)."""
        def token(token_id: int | None) -> str | None:
            return None if token_id is None else self.tokenizer.id_to_token(token_id)

        return token(self.bos_id), token(self.eos_id), token(self.pad_id)


def load_tokenizer(path: str | Path) -> TokenizerBundle:
    """Load a tokenizer directory (or a tokenizer.json file); UserError says what is wrong."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: no tokenizer there ({TRAIN_HINT})")
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path} is not a tokenizer directory: no {TOKENIZER_FILE} ({TRAIN_HINT})")
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as error:  # tokenizers raises a bare Exception for every parse failure
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{file} is not a valid tokenizer.json ({reason}); re-train or re-export it") from error
    config = read_special_token_config(file.parent)
    return TokenizerBundle(
        tokenizer=tokenizer,
        path=path,
        fingerprint=tokenizer_fingerprint(tokenizer),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        # An encoder's tokenizer (BERT) names [CLS] and [SEP] where a decoder's names bos and eos.
        bos_id=_special_id(tokenizer, BOS, config.get("bos_token") or config.get("cls_token"), file),
        eos_id=_require_eos_id(tokenizer, config.get("eos_token") or config.get("sep_token"), file),
        pad_id=_special_id(tokenizer, PAD, config.get("pad_token"), file),
    )


def read_special_token_config(directory: Path) -> dict:
    # tokenizer_config.json wins over special_tokens_map.json, as in transformers.
    merged: dict = {}
    for name in (SPECIAL_TOKENS_MAP_FILE, CONFIG_FILE):
        file = directory / name
        if not file.is_file():
            continue
        merged.update(read_json_object(file))
    return merged


def _special_id(tokenizer: Tokenizer, default: str, configured: object, file: Path) -> int | None:
    token_id = tokenizer.token_to_id(default)
    if token_id is not None:
        return token_id
    # transformers may store a special token as {"content": "...", ...} (a serialised AddedToken).
    content = configured.get("content") if isinstance(configured, dict) else configured
    if not isinstance(content, str):
        return None
    token_id = tokenizer.token_to_id(content)
    if token_id is None:
        raise UserError(f"{file.parent / CONFIG_FILE}: special token {content!r} is not in the vocabulary of {file}")
    return token_id


def _require_eos_id(tokenizer: Tokenizer, configured: object, file: Path) -> int:
    token_id = _special_id(tokenizer, EOS, configured, file)
    if token_id is None:
        raise UserError(
            f"{file} has no end-of-sequence token: no {EOS} and no eos_token (or sep_token) in {CONFIG_FILE}; "
            f"add \"eos_token\" to {file.parent / CONFIG_FILE}"
        )
    return token_id

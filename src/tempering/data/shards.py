"""Token shards on disk: flat binary token files plus `manifest.json` (DESIGN.md, "Token shards").

Layout:
    OUTPUT/manifest.json
    OUTPUT/train/shard-00000.bin, shard-00001.bin, ...
    OUTPUT/val/shard-00000.bin, ...
A shard holds raw little-endian token ids (uint16 when the vocabulary has at most 65,536
entries, else uint32) of whole documents, each followed by EOS; a document may continue
into the next shard of its split. The format is written by hand because it is nothing but
numpy's own bytes: `numpy.memmap` (or any nanoGPT-style loader) reads it with no library.

A shard directory is built in a hidden temporary sibling and renamed into place when
complete, so a crash never leaves a manifest pointing at partial shards.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import IO

import numpy as np

from tempering.errors import UserError
from tempering.json_files import read_json_object

FORMAT_NAME = "tempering-token-shards"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
REBUILD_HINT = "re-create it with `temper prep`"


def token_dtype(vocab_size: int) -> np.dtype:
    """The on-disk token dtype: uint16 when every id fits, else uint32."""
    return DTYPES["uint16"] if vocab_size <= 1 << 16 else DTYPES["uint32"]


def shard_file_name(index: int) -> str:
    """File name of the index-th shard of a split."""
    return f"shard-{index:05d}.bin"


class TokenShardWriter:
    """Append documents' tokens to one split's shard files, starting a new file every `shard_tokens`."""

    def __init__(self, root: Path, split: str, *, dtype: np.dtype, eos_id: int, shard_tokens: int):
        self.root, self.split = root, split
        self.dtype, self.eos_id, self.shard_tokens = dtype, eos_id, shard_tokens
        self.shards: list[dict] = []  # manifest entries: file, num_tokens, num_documents
        self._file: IO[bytes] | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens written so far."""
        return sum(shard["num_tokens"] for shard in self.shards)

    @property
    def num_documents(self) -> int:
        """Documents (EOS tokens) written so far."""
        return sum(shard["num_documents"] for shard in self.shards)

    def write(self, tokens: np.ndarray) -> None:
        """Append tokens of whole documents, each already followed by EOS."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        start = 0
        while start < len(tokens):
            if self._file is None or self.shards[-1]["num_tokens"] == self.shard_tokens:
                self._open_next_shard()
            shard = self.shards[-1]
            piece = tokens[start:start + self.shard_tokens - shard["num_tokens"]]
            self._file.write(piece.data)
            shard["num_tokens"] += len(piece)
            shard["num_documents"] += int(np.count_nonzero(piece == self.eos_id))
            start += len(piece)

    def close(self) -> None:
        """Flush the last shard to disk."""
        if self._file is not None:
            _close_synced(self._file)
            self._file = None

    def _open_next_shard(self) -> None:
        self.close()
        name = f"{self.split}/{shard_file_name(len(self.shards))}"
        (self.root / self.split).mkdir(exist_ok=True)
        self._file = open(self.root / name, "wb")  # noqa: SIM115 -- closed in close()
        self.shards.append({"file": name, "num_tokens": 0, "num_documents": 0})


def _close_synced(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


class TokenShardsBuilder:
    """Write a whole shard directory in a temporary sibling and move it to `output` on commit."""

    def __init__(self, output: Path, *, vocab_size: int, eos_id: int, shard_tokens: int):
        self.output = Path(output)
        self.dtype = token_dtype(vocab_size)
        # mkdir, not tempfile.mkdtemp: the finished directory gets the usual (umask) permissions.
        self._build_dir = self.output.parent / f".{self.output.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            self._build_dir.mkdir(parents=True)
        except OSError as error:
            raise UserError(f"cannot write beside {self.output} ({error}); choose another output directory") from error
        self.writers = {split: TokenShardWriter(self._build_dir, split, dtype=self.dtype, eos_id=eos_id,
                                                shard_tokens=shard_tokens) for split in SPLITS}

    def __enter__(self) -> TokenShardsBuilder:
        return self

    def __exit__(self, *exc_info) -> None:
        for writer in self.writers.values():
            writer.close()
        if self._build_dir.exists():  # not committed: leave `output` as it was
            shutil.rmtree(self._build_dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where a file beside the shards (such as per-document scores) goes in the directory being built."""
        return self._build_dir / name

    def commit(self, *, tokenizer: dict, seq_len: int | None, sources: list[dict], cleaning: dict,
               options: dict) -> dict:
        """Write manifest.json, replace `output` with the finished directory; return the manifest."""
        for writer in self.writers.values():
            writer.close()
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "tokenizer": tokenizer,  # fingerprint, path, vocab_size, eos_id
            "seq_len": seq_len,
            "splits": {split: {"num_tokens": writer.num_tokens, "num_documents": writer.num_documents,
                               "shards": writer.shards} for split, writer in self.writers.items()},
            "sources": sources,
            "cleaning": cleaning,
            "options": options,
        }
        with open(self._build_dir / MANIFEST_FILE, "w", encoding="utf-8") as file:
            file.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())
        _replace_dir(self._build_dir, self.output)
        return manifest


def _replace_dir(new: Path, output: Path) -> None:
    if not output.exists():
        os.rename(new, output)
        return
    # Two renames, not one: POSIX cannot rename a directory onto a non-empty one.
    old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(output, old)
    os.rename(new, output)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | Path) -> dict:
    """Load and check a shard directory's manifest.json; UserError names what is wrong."""
    file = Path(path) / MANIFEST_FILE
    if not file.is_file():
        raise UserError(f"{path} holds no {MANIFEST_FILE}: not a token shard directory "
                        f"(make one with `temper prep`)")
    not_manifest = f"{{file}} is not a Tempering token-shard manifest; {REBUILD_HINT}"
    manifest = read_json_object(file, invalid=f"{{file}} is unreadable ({{error}}); {REBUILD_HINT}",
                                not_object=not_manifest)
    if manifest.get("format") != FORMAT_NAME:
        raise UserError(not_manifest.format(file=file))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{file} has format version {manifest.get('format_version')}, this Tempering "
                        f"reads version {FORMAT_VERSION}; {REBUILD_HINT}")
    try:
        _check_manifest_fields(manifest)
    except (KeyError, TypeError) as error:
        raise UserError(f"{file} is damaged (bad or missing {error}); {REBUILD_HINT}") from error
    return manifest


def _check_manifest_fields(manifest: dict) -> None:
    if manifest["dtype"] not in DTYPES:
        raise KeyError("dtype")
    for key in ("fingerprint", "vocab_size", "eos_id"):
        manifest["tokenizer"][key]  # noqa: B018 -- raises KeyError when absent
    for split in SPLITS:
        for shard in manifest["splits"][split]["shards"]:
            if not isinstance(shard["file"], str) or not isinstance(shard["num_tokens"], int):
                raise TypeError("shard entry")


class TokenShards:
    """Random access to one split's tokens, memory-mapped over its shard files (what training reads)."""

    def __init__(self, path: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path = Path(path)
        self.split = split
        self.manifest = read_manifest(self.path)
        self.dtype = DTYPES[self.manifest["dtype"]]
        entries = self.manifest["splits"][split]["shards"]
        self._arrays = [self._open_shard(entry) for entry in entries]
        self._offsets = np.cumsum([0, *(len(array) for array in self._arrays)], dtype=np.int64)
        self._eos_positions: np.ndarray | None = None

    def _open_shard(self, entry: dict) -> np.ndarray:
        file = self.path / entry["file"]
        expected_bytes = entry["num_tokens"] * self.dtype.itemsize
        if not file.is_file():
            raise UserError(f"{file} is missing (listed in {self.path / MANIFEST_FILE}); {REBUILD_HINT}")
        actual_bytes = file.stat().st_size
        if actual_bytes != expected_bytes:
            raise UserError(f"{file} is {actual_bytes:,} bytes but the manifest says {expected_bytes:,} "
                            f"({entry['num_tokens']:,} tokens): the shard is truncated or corrupt; {REBUILD_HINT}")
        if expected_bytes == 0:
            return np.zeros(0, self.dtype)
        return np.memmap(file, dtype=self.dtype, mode="r", shape=(entry["num_tokens"],))

    @property
    def num_tokens(self) -> int:
        """Tokens in this split."""
        return int(self._offsets[-1])

    @property
    def num_documents(self) -> int:
        """Documents in this split (as recorded in the manifest)."""
        return int(self.manifest["splits"][self.split]["num_documents"])

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer that wrote the shards."""
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def eos_id(self) -> int:
        """The id that ends every document."""
        return int(self.manifest["tokenizer"]["eos_id"])

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the tokenizer that wrote the shards."""
        return str(self.manifest["tokenizer"]["fingerprint"])

    def __len__(self) -> int:
        return self.num_tokens

    def __getitem__(self, index: int | slice) -> int | np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.num_tokens)
            if step != 1:
                raise ValueError("TokenShards slices must have step 1")
            return self.read(start, max(0, stop - start))
        position = index + self.num_tokens if index < 0 else index
        if not 0 <= position < self.num_tokens:
            raise IndexError(f"token index {index} out of range for {self.num_tokens} tokens")
        return int(self.read(position, 1)[0])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the split's concatenated shards."""
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) out of range for {self.num_tokens} tokens")
        if length == 0:
            return np.zeros(0, self.dtype)
        shard = int(np.searchsorted(self._offsets, start, side="right")) - 1
        pieces = []
        while length > 0:
            within = start - int(self._offsets[shard])
            piece = self._arrays[shard][within:within + length]
            pieces.append(piece)
            start, length, shard = start + len(piece), length - len(piece), shard + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def document_boundaries(self) -> np.ndarray:
        """Positions of the EOS token that ends each document, as int64 (computed once, lazily)."""
        if self._eos_positions is None:
            positions = [np.flatnonzero(array == self.eos_id) + offset
                         for array, offset in zip(self._arrays, self._offsets[:-1], strict=True)]
            self._eos_positions = np.concatenate([np.zeros(0, np.int64), *positions]).astype(np.int64)
        return self._eos_positions

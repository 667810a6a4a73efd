"""The built-in sample corpus: real English prose and Python code from the Python install itself.

Two domains, each split into train and val JSONL files of {"id", "source", "text"}:
  prose: every `pydoc_data.topics` entry (the language reference) and, per standard-library
         module, its module/class/function docstrings (read with `ast`, never imported:
         importing some stdlib modules has side effects);
  code:  the standard library's own `.py` sources, without test suites, generated codec
         tables, build-configuration data, files over 200 KB or files that are not UTF-8.
It also writes a small chat set built from the same docstrings (see sample_chat.py).
The same Python install always yields byte-identical files: files are read in sorted order,
the code domain is capped by taking files in that order, and the split is a hash of the id.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tempering.data.sample_chat import build_chat_rows
from tempering.errors import UserError
from tempering.tracking.console import progress_bar

DOMAINS = ("prose", "code")
SPLITS = ("train", "val")
MAX_FILE_BYTES = 200_000
MAX_CODE_BYTES = 10_000_000
MIN_DOCSTRING_CHARS = 200
# Test suites are large and repetitive; site-packages differs between machines.
EXCLUDED_DIR_NAMES = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
# Build paths of the machine that compiled Python; not code anyone writes.
EXCLUDED_FILE_PREFIXES = ("_sysconfigdata_",)
# encodings/cp1252.py and friends: 70-odd machine-generated 256-entry tables (~1.3 MB).
GENERATED_CODEC_MARKER = "Python Character Mapping Codec"
DOCSTRING_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class StdlibFile:
    """One eligible standard-library source file."""

    relative_path: str  # posix, relative to the stdlib root
    text: str


def write_sample_corpus(
    output: Path,
    *,
    val_fraction: float = 0.05,
    stdlib_dir: Path | None = None,
    max_code_bytes: int = MAX_CODE_BYTES,
) -> dict:
    """Write output/{prose,code}/{train,val}.jsonl and the chat set output/chat/{chat,preference}_{train,val}.jsonl.

    Returns {part: {split: counts}} for prose, code, chat and preference.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    output = Path(output)
    _check_output_dir(output)
    stdlib_dir = stdlib_dir or default_stdlib_dir()
    stdlib_files = list(iter_stdlib_files(stdlib_dir))
    documents = {
        "prose": [*iter_pydoc_topic_documents(), *iter_docstring_documents(stdlib_files)],
        "code": list(iter_code_documents(stdlib_files, max_code_bytes=max_code_bytes)),
    }
    if not documents["code"]:
        raise UserError(f"no readable standard-library .py sources under {stdlib_dir} "
                        "(this Python may ship compiled files only); install its source package")
    summary: dict = {}
    for domain in DOMAINS:
        train, val = split_documents(documents[domain], val_fraction)
        summary[domain] = {
            "train": _write_jsonl(output / domain / "train.jsonl", train),
            "val": _write_jsonl(output / domain / "val.jsonl", val),
        }
    chats, pairs = build_chat_rows(stdlib_files)
    for name, rows in (("chat", chats), ("preference", pairs)):
        train, val = split_documents(rows, val_fraction)
        summary[name] = {"train": _write_jsonl(output / "chat" / f"{name}_train.jsonl", train),
                         "val": _write_jsonl(output / "chat" / f"{name}_val.jsonl", val)}
    return summary


def default_stdlib_dir() -> Path:
    """Return the directory of this Python's standard-library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_stdlib_files(stdlib_dir: Path) -> Iterator[StdlibFile]:
    """Yield eligible stdlib .py files in sorted relative-path order."""
    if not stdlib_dir.is_dir():
        raise UserError(f"{stdlib_dir} is not a directory of Python standard-library sources")
    paths = sorted(_iter_candidate_paths(stdlib_dir), key=lambda path: path.relative_to(stdlib_dir).as_posix())
    with progress_bar("reading stdlib", total=len(paths), counts=True) as advance:
        for path in paths:
            advance()
            text = _read_eligible_source(path)
            if text is not None:
                yield StdlibFile(path.relative_to(stdlib_dir).as_posix(), text)


def iter_pydoc_topic_documents() -> Iterator[dict]:
    """Yield one document per `pydoc_data.topics` entry (Python's reference prose), sorted by topic."""
    from pydoc_data.topics import topics  # a plain dict literal; importing it runs nothing else

    for name in sorted(topics):
        yield {"id": f"pydoc-topic/{name}", "source": "pydoc_data.topics", "text": topics[name]}


def iter_docstring_documents(files: list[StdlibFile]) -> Iterator[dict]:
    """Yield one document per module: its docstrings in source order, joined by blank lines."""
    for file in files:
        try:
            with warnings.catch_warnings():  # e.g. invalid-escape SyntaxWarnings on newer Pythons
                warnings.simplefilter("ignore")
                tree = ast.parse(file.text)
        except (SyntaxError, ValueError):  # e.g. grammar fixtures written for Python 2
            continue
        text = "\n\n".join(_iter_docstrings(tree))
        if len(text) >= MIN_DOCSTRING_CHARS:
            yield {"id": f"stdlib-docstrings/{file.relative_path}", "source": "stdlib-docstrings", "text": text}


def iter_code_documents(files: list[StdlibFile], *, max_code_bytes: int) -> Iterator[dict]:
    """Yield one document per non-empty source file, in order, until `max_code_bytes` of text is reached."""
    num_bytes = 0
    for file in files:
        if not file.text.strip():
            continue  # empty __init__.py files are not documents
        num_bytes += len(file.text.encode("utf-8"))
        if num_bytes > max_code_bytes:
            return
        yield {"id": f"stdlib-source/{file.relative_path}", "source": "stdlib-source", "text": file.text}


def split_documents(documents: list[dict], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """Split by a stable hash of each id; train is never empty, val not when there are two documents."""
    scored = [(_unit_hash(document["id"]), document) for document in documents]
    val = [document for score, document in scored if score < val_fraction]
    train = [document for score, document in scored if score >= val_fraction]
    if len(documents) >= 2 and not val:
        lowest = min(scored, key=lambda pair: pair[0])[1]
        train, val = [document for document in train if document is not lowest], [lowest]
    if documents and not train:
        highest = max(scored, key=lambda pair: pair[0])[1]
        val, train = [document for document in val if document is not highest], [highest]
    return train, val


def _unit_hash(document_id: str) -> float:
    digest = hashlib.blake2b(document_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _iter_candidate_paths(stdlib_dir: Path) -> Iterator[Path]:
    for directory, dir_names, file_names in os.walk(stdlib_dir):
        dir_names[:] = [name for name in dir_names if name not in EXCLUDED_DIR_NAMES]
        for name in file_names:
            if name.endswith(".py") and not name.startswith(EXCLUDED_FILE_PREFIXES):
                yield Path(directory) / name


def _read_eligible_source(path: Path) -> str | None:
    if path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return None if GENERATED_CODEC_MARKER in text[:200] else text


def _iter_docstrings(node: ast.AST) -> Iterator[str]:
    if isinstance(node, DOCSTRING_NODES):
        docstring = ast.get_docstring(node, clean=True)
        if docstring:
            yield docstring
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt):  # docstrings only live in statements; skip expressions
            yield from _iter_docstrings(child)


def _check_output_dir(output: Path) -> None:
    if not output.exists():
        return
    if not output.is_dir():
        raise UserError(f"{output} is a file; choose a directory for the sample corpus")
    ours = {*DOMAINS, "chat"} | {
        f"{domain}/{split}.jsonl{suffix}" for domain in DOMAINS for split in SPLITS for suffix in ("", TMP_SUFFIX)
    } | {f"chat/{name}_{split}.jsonl{suffix}" for name in ("chat", "preference") for split in SPLITS
         for suffix in ("", TMP_SUFFIX)}
    relative_paths = (path.relative_to(output).as_posix() for path in output.rglob("*"))
    foreign = next((relative for relative in relative_paths if relative not in ours), None)
    if foreign is not None:
        raise UserError(
            f"{output} already holds files that are not a sample corpus (e.g. {foreign}); "
            "choose an empty or new directory"
        )


def _write_jsonl(path: Path, documents: list[dict]) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(document, ensure_ascii=False) + "\n" for document in documents]
    payload = "".join(lines).encode("utf-8")
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    text_bytes = sum(len(document.get("text", "").encode("utf-8")) for document in documents) or len(payload)
    return {"documents": len(documents), "bytes": text_bytes, "file_bytes": len(payload)}

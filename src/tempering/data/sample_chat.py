"""A small chat set built from the standard library's own docs, for the SFT/DPO demo and tests.

Each public function or class with a docstring becomes one exchange: the user asks
"What does `module.name` do?" and the assistant answers with the docstring's first
paragraph. Preference pairs keep that answer as `chosen` and take, as `rejected`, the
answer about a different name (the next one in a hash order): both sides are real,
human-written text; the preference is constructed, so this suits demos and smoke
tests, not claims about alignment quality.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import warnings
from collections.abc import Iterator

MIN_ANSWER_CHARS = 40
MAX_ANSWER_CHARS = 600
MAX_EXAMPLES = 3000
SYSTEM_PROMPT = "You answer questions about the Python standard library."


def iter_documented_names(files) -> Iterator[tuple[str, str]]:
    """Yield (dotted name, first docstring paragraph) for public top-level functions and classes."""
    for file in files:
        module = file.relative_path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        if any(part.startswith("_") for part in module.split(".")):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(file.text)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
                continue
            docstring = ast.get_docstring(node)
            answer = inspect.cleandoc(docstring).split("\n\n")[0].replace("\n", " ").strip() if docstring else ""
            if MIN_ANSWER_CHARS <= len(answer) <= MAX_ANSWER_CHARS:
                yield f"{module}.{node.name}", answer


def build_chat_rows(files) -> tuple[list[dict], list[dict]]:
    """(SFT rows in `messages` form, preference rows), each with a stable `id`, capped at MAX_EXAMPLES."""
    named = sorted(iter_documented_names(files), key=lambda item: _hash(item[0]))[:MAX_EXAMPLES]
    sft, preference = [], []
    for index, (name, answer) in enumerate(named):
        question = f"What does `{name}` do?"
        sft.append({"id": f"stdlib-chat/{name}", "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer}]})
        other = named[(index + 1) % len(named)][1]
        preference.append({"id": f"stdlib-preference/{name}", "prompt": question, "chosen": answer,
                           "rejected": other})
    return sft, preference


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")

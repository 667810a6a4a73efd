"""A tiny tokenizer trained once per session on real text (pydoc topics + a stdlib module)."""

from pathlib import Path
from pydoc_data.topics import topics

import pytest

from tempering.data.sample_corpus import default_stdlib_dir
from tempering.tokenizer import TokenizerBundle, load_tokenizer, train_tokenizer

TINY_VOCAB_SIZE = 400
TOPIC_NAMES = sorted(topics)


def _training_texts() -> list[str]:
    """About 200 KB of real prose (40 reference topics) and code (textwrap.py)."""
    code = (default_stdlib_dir() / "textwrap.py").read_text(encoding="utf-8")
    return [topics[name] for name in TOPIC_NAMES[:40]] + [code]


@pytest.fixture(scope="session")
def training_texts() -> list[str]:
    """The texts the session tokenizer was trained on."""
    return _training_texts()


@pytest.fixture(scope="session")
def held_out_texts() -> dict[str, str]:
    """Real text the tokenizer never saw: prose, code, non-ASCII, control bytes, chat markup."""
    return {
        "prose": "\n\n".join(topics[name] for name in TOPIC_NAMES[-5:]),
        "code": (default_stdlib_dir() / "colorsys.py").read_text(encoding="utf-8"),
        "unicode": "naïve café — 日本語 ✓ 🙂 Ωμέγα\u00a0end",
        "control": "tab\there\r\nnull\x00bell\x07  trailing   ",
        "chat": "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>4</think>4<|im_end|>",
    }


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, training_texts) -> Path:
    """Directory of a 400-token tokenizer, trained once for all tests."""
    output = tmp_path_factory.mktemp("tokenizer") / "tok"
    train_tokenizer(training_texts, TINY_VOCAB_SIZE, output, show_progress=False)
    return output


@pytest.fixture
def tiny_bundle(tiny_tokenizer_dir) -> TokenizerBundle:
    """The session tokenizer, freshly loaded."""
    return load_tokenizer(tiny_tokenizer_dir)

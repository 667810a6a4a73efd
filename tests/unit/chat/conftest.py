"""Fixtures for chat tests: a tiny tokenizer trained on real prose, and one rich conversation."""

from pathlib import Path
from pydoc_data.topics import topics

import pytest

from tempering.tokenizer import TokenizerBundle, load_tokenizer, train_tokenizer

CHAT_VOCAB_SIZE = 400
CORPUS_CHARS = 8_000


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory) -> Path:
    """A 400-token byte-level BPE tokenizer (with the chat special tokens) trained on ~8 KB of pydoc topics."""
    text = "\n\n".join(topics[name] for name in sorted(topics))[:CORPUS_CHARS]
    output = tmp_path_factory.mktemp("chat_tokenizer") / "tok"
    train_tokenizer([text], CHAT_VOCAB_SIZE, output, show_progress=False)
    return output


@pytest.fixture
def chat_bundle(chat_tokenizer_dir) -> TokenizerBundle:
    """The session chat tokenizer, freshly loaded."""
    return load_tokenizer(chat_tokenizer_dir)


ADD_TOOL = {"type": "function", "function": {
    "name": "add", "description": "Add two integers <a> & <b>.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}


@pytest.fixture
def tool_chat_record() -> dict:
    """A messages record with system, user, reasoning, a tool call (string JSON arguments), a tool result, an answer."""
    return {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+3? Use the tool."},
            {"role": "assistant", "content": "", "reasoning_content": "A sum: call add.",
             "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
            {"role": "tool", "content": "5", "tool_call_id": "call_0"},
            {"role": "assistant", "content": "2+3 = 5."},
        ],
        "tools": [ADD_TOOL],
    }

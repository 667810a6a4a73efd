"""Growing the vocabulary for tokens a foreign tokenizer lacked, and the sample chat set."""

from __future__ import annotations

import torch

from tempering.data.sample_chat import build_chat_rows
from tempering.data.sample_corpus import StdlibFile
from tempering.models.llama.architecture import PRESETS
from tempering.models.llama.model import build_model, grow_vocabulary


def test_growing_keeps_old_rows_and_starts_new_rows_at_the_mean():
    for tied in (True, False):
        torch.manual_seed(0)
        model = build_model(PRESETS["tiny"].with_overrides(vocab_size=256, tie_embeddings=tied)).eval()
        grown = grow_vocabulary(model, 260).eval()
        assert grown.arch.vocab_size == 260
        old, new = model.model.embed_tokens.weight, grown.model.embed_tokens.weight
        assert torch.equal(new[:256], old)
        torch.testing.assert_close(new[256:], old.mean(0, keepdim=True).expand(4, -1))
        ids = torch.randint(0, 256, (1, 12))
        with torch.no_grad():
            torch.testing.assert_close(grown(ids)[..., :256], model(ids))


def test_sample_chat_rows_come_from_public_documented_names():
    source = '''
def dumps(obj):
    """Serialize obj to a JSON formatted string, with many options.

    More detail that is not used."""

def _private():
    """A private helper that should never become an example at all."""

class Short:
    """Too short."""
'''
    files = [StdlibFile("json/__init__.py", source), StdlibFile("_hidden.py", source)]
    chats, pairs = build_chat_rows(files)
    assert [row["id"] for row in chats] == ["stdlib-chat/json.dumps"]
    messages = chats[0]["messages"]
    assert messages[1]["content"] == "What does `json.dumps` do?"
    assert messages[2]["content"] == "Serialize obj to a JSON formatted string, with many options."
    assert pairs[0]["chosen"] == messages[2]["content"] and pairs[0]["prompt"] == messages[1]["content"]

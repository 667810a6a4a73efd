"""Loading chat files: JSONL / JSON / Parquet, file:line errors, limits and named transforms."""

import json

import pytest

from tempering.data.chat import (
    Message,
    get_transform,
    load_conversations,
    load_preference_pairs,
    register_transform,
)
from tempering.data.chat.transforms import TRANSFORMS
from tempering.errors import UserError

ALPACA = {"instruction": "Say hi.", "output": "hi"}
REASONING = {"question": "1+1?", "reasoning": "Add.", "answer": "2"}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_mixes_formats_per_record_and_respects_limit(tmp_path):
    path = _write_jsonl(tmp_path / "mixed.jsonl", [ALPACA, REASONING, ALPACA])
    conversations = load_conversations(path)
    assert [c.messages[-1] for c in conversations] == [
        Message("assistant", "hi"), Message("assistant", "2", reasoning="Add."), Message("assistant", "hi")]
    assert len(load_conversations(path, limit=2)) == 2


def test_directory_of_json_array_and_parquet(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")

    (tmp_path / "a.json").write_text(json.dumps([ALPACA, REASONING]), encoding="utf-8")
    messages = [{"role": "user", "content": "q", "tool_calls": None},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"k\": 1}"}}]},
                {"role": "tool", "content": "r", "tool_calls": None},
                {"role": "assistant", "content": "done", "tool_calls": None}]
    parquet.write_table(pyarrow.Table.from_pylist([{"messages": messages}]), tmp_path / "b.parquet")
    conversations = load_conversations(tmp_path, format="parquet")
    assert len(conversations) == 3
    assert conversations[2].messages[1] == Message("assistant", "", tool_calls=[{"name": "f", "arguments": {"k": 1}}])


def test_malformed_record_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [ALPACA, {"instruction": "no output"}])
    with pytest.raises(UserError, match=r"bad\.jsonl:2: alpaca record has no 'output'"):
        load_conversations(path)
    path.write_text(json.dumps(ALPACA) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:3: invalid JSON"):
        load_conversations(path)


def test_invalid_tool_arguments_name_file_and_line(tmp_path):
    record = {"user_message": "u", "tool_calls": [{"name": "f", "arguments": "{oops"}], "tool_results": ["r"],
              "assistant_response": "a"}
    path = _write_jsonl(tmp_path / "tools.jsonl", [record])
    with pytest.raises(UserError, match=r"tools\.jsonl:1: tool call 1 \(f\): arguments is not valid JSON"):
        load_conversations(path)


def test_unusable_inputs_are_user_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("plain text", encoding="utf-8")
    with pytest.raises(UserError, match="must be .jsonl, .json or .parquet"):
        load_conversations(tmp_path / "notes.txt")
    path = _write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    with pytest.raises(UserError, match="format 'text' is not usable here"):
        load_conversations(path, format="text")
    with pytest.raises(UserError, match="preference pair"):
        load_conversations(_write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}]))


def test_preference_loader(tmp_path):
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}, ALPACA])
    with pytest.raises(UserError, match=r"pairs\.jsonl:2: preference record has no 'prompt'"):
        load_preference_pairs(path)
    pairs = load_preference_pairs(path, limit=1)
    assert [(p.chosen[0].content, p.rejected[0].content) for p in pairs] == [("c", "r")]


@pytest.fixture
def upper_transform():
    @register_transform("test_qa_upper")
    def qa_to_alpaca(record: dict) -> dict:
        return {"instruction": record["q"], "output": record["a"].upper()}
    yield "test_qa_upper"
    TRANSFORMS.pop("test_qa_upper")


def test_registered_transform_applies_before_normalising(tmp_path, upper_transform):
    path = _write_jsonl(tmp_path / "qa.jsonl", [{"q": "Shout yes.", "a": "yes"}, {"q": "missing a"}])
    assert get_transform(upper_transform)({"q": "x", "a": "y"}) == {"instruction": "x", "output": "Y"}
    with pytest.raises(UserError, match=r"qa\.jsonl:2: transform 'test_qa_upper' failed: KeyError"):
        load_conversations(path, transform=upper_transform)
    first = load_conversations(path, transform=upper_transform, limit=1)[0]
    assert first.messages == [Message("user", "Shout yes."), Message("assistant", "YES")]


def test_registry_rejects_a_taken_name_and_suggests_close_names(upper_transform):
    with pytest.raises(ValueError, match="already registered"):
        register_transform(upper_transform)(lambda record: record)
    with pytest.raises(UserError, match="unknown transform 'sharegtp'; did you mean 'sharegpt'"):
        get_transform("sharegtp")


def test_builtin_sharegpt_and_prompt_completion_transforms(tmp_path):
    sharegpt = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    path = _write_jsonl(tmp_path / "s.jsonl", [sharegpt])
    assert load_conversations(path, transform="sharegpt")[0].messages == [
        Message("user", "hi"), Message("assistant", "hello")]
    assert get_transform("prompt_completion")({"prompt": "def f():", "completion": " pass"}) == {
        "messages": [{"role": "user", "content": "def f():"}, {"role": "assistant", "content": " pass"}]}

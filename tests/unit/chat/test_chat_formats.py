"""Every supported record layout normalises to the same internal Conversation form."""

import pytest

from tempering.data.chat import (
    Conversation,
    Message,
    PreferencePair,
    RecordError,
    detect_format,
    normalize_preference,
    normalize_record,
)


def test_messages_with_string_json_tool_arguments(tool_chat_record):
    conversation = normalize_record(tool_chat_record)
    assert conversation.tools == tool_chat_record["tools"]
    assert conversation.messages == [
        Message("system", "You are terse."),
        Message("user", "What is 2+3? Use the tool."),
        Message("assistant", "", reasoning="A sum: call add.", tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}]),
        Message("tool", "5", tool_call_id="call_0"),
        Message("assistant", "2+3 = 5."),
    ]


def test_messages_accept_flat_tool_calls_null_content_and_text_parts():
    record = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "f", "arguments": {"x": [1]}}]},
        {"role": "tool", "name": "f", "content": "ok"},
        {"role": "assistant", "content": "done", "thinking": "hm"},
    ]}
    messages = normalize_record(record, "messages").messages
    assert messages[0] == Message("user", "ab")
    assert messages[1] == Message("assistant", "", tool_calls=[{"name": "f", "arguments": {"x": [1]}}])
    assert messages[2] == Message("tool", "ok", name="f")
    assert messages[3] == Message("assistant", "done", reasoning="hm")


def test_alpaca_with_and_without_input():
    with_input = normalize_record({"instruction": "Translate.", "input": "chat", "output": "cat"})
    assert with_input == Conversation([Message("user", "Translate.\n\nchat"), Message("assistant", "cat")])
    bare = normalize_record({"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be kind."})
    assert bare.messages == [Message("system", "Be kind."), Message("user", "Say hi."), Message("assistant", "hi")]


def test_tool_call_format():
    record = {"user_message": "Weather in Oslo and Rome?",
              "tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}},
                             {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}],
              "tool_results": [{"temp_c": 3}, "sunny"],
              "assistant_response": "Oslo 3 C, Rome sunny.",
              "tools": [{"name": "weather", "parameters": {"type": "object"}}]}
    conversation = normalize_record(record)
    assert conversation == Conversation(
        [Message("user", "Weather in Oslo and Rome?"),
         Message("assistant", "", tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}},
                                              {"name": "weather", "arguments": {"city": "Rome"}}]),
         Message("tool", '{"temp_c": 3}', name="weather"),
         Message("tool", "sunny", name="weather"),
         Message("assistant", "Oslo 3 C, Rome sunny.")],
        tools=[{"name": "weather", "parameters": {"type": "object"}}])


def test_reasoning_format():
    conversation = normalize_record({"question": "2*4?", "reasoning": "Double 4.", "answer": "8"})
    assert conversation == Conversation([Message("user", "2*4?"), Message("assistant", "8", reasoning="Double 4.")])


@pytest.mark.parametrize(("record", "expected"), [
    ({"messages": [], "prompt": "x", "chosen": "y"}, "messages"),
    ({"prompt": "p", "chosen": "c", "rejected": "r"}, "preference"),
    ({"user_message": "u", "tool_calls": [], "tool_results": [], "assistant_response": "a"}, "tool_call"),
    ({"question": "q", "reasoning": "r", "answer": "a"}, "reasoning"),
    ({"instruction": "i", "output": "o"}, "alpaca"),
])
def test_detect_format_by_fields(record, expected):
    assert detect_format(record) == expected


def test_forced_format_overrides_detection():
    record = {"instruction": "i", "output": "o", "question": "q", "reasoning": "r", "answer": "a"}
    assert normalize_record(record).messages[0].content == "q"  # reasoning is detected first
    assert normalize_record(record, "alpaca").messages[0].content == "i"


@pytest.mark.parametrize(("record", "fragment"), [
    ({"text": "hello"}, "matches no chat format (fields: text)"),
    ({"instruction": "i"}, "alpaca record has no 'output'"),
    ({"instruction": "i", "output": 3}, "alpaca 'output' must be a string, got int"),
    ({"question": "q", "answer": "a"}, "reasoning record has no 'reasoning'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "message 1 has role 'bot'"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant message to train on"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": 1"}}]}]},
     "message 2 tool call 1 (f): arguments is not valid JSON"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "tool_calls": [{"name": "f", "arguments": "[1]"}]}]},
     "arguments must be a JSON object, got list"),
    ({"user_message": "u", "tool_calls": [{"name": "f"}], "tool_results": [], "assistant_response": "a"},
     "1 tool_calls but 0 tool_results"),
    ({"prompt": "p", "chosen": "c", "rejected": "r"}, "preference pair"),
])
def test_malformed_records_say_what_is_wrong(record, fragment):
    with pytest.raises(RecordError) as caught:
        normalize_record(record)
    assert fragment in str(caught.value)


def test_preference_pairs_from_strings_and_message_lists():
    pair = normalize_preference({"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."})
    assert pair == PreferencePair(Conversation([Message("user", "Capital of France?")]),
                                  [Message("assistant", "Paris.")], [Message("assistant", "Rome.")])
    listed = normalize_preference({
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}]})
    assert listed.prompt.messages == [Message("system", "s"), Message("user", "u")]
    assert listed.chosen == [Message("assistant", "good")]
    with pytest.raises(RecordError, match="has no 'rejected'"):
        normalize_preference({"prompt": "p", "chosen": "c"})
    with pytest.raises(RecordError, match="'chosen' has no assistant message"):
        normalize_preference({"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "r"})

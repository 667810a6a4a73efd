"""Rendering to ids + shifted labels: exactly the assistant tokens (end-of-turn included) are trained."""

import numpy as np
import pytest

from tempering.data.chat import (
    IGNORE_INDEX,
    ChatTemplate,
    Conversation,
    Message,
    get_template,
    normalize_preference,
    normalize_record,
    render_chat,
    render_conversation,
    render_for_display,
    render_preference_pair,
    render_prompt,
    required_special_tokens,
    to_template_messages,
)
from tempering.errors import UserError

CHATML_REPLIES = [
    '<think>\nA sum: call add.\n</think>\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n'
    "</tool_call><|im_end|>",
    "2+3 = 5.<|im_end|>",
]


def _trained_runs(example, bundle) -> list[str]:
    return [text for text, trained in render_for_display(example, bundle) if trained]


@pytest.mark.parametrize(("name", "eot"), [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_trained_tokens_are_exactly_assistant_parts_and_end_of_turn(tool_chat_record, chat_bundle, name, eot):
    conversation = normalize_record(tool_chat_record)
    example = render_conversation(conversation, get_template(name), chat_bundle, max_seq_length=4096)
    text = render_chat(get_template(name), to_template_messages(conversation.messages), conversation.tools)
    assert example.input_ids.dtype == np.int32 and example.labels.dtype == np.int32
    assert chat_bundle.decode(example.input_ids) == text
    replies = [reply.replace("<|im_end|>", eot) for reply in CHATML_REPLIES]
    assert _trained_runs(example, chat_bundle) == replies
    trained_ids = example.labels[example.labels != IGNORE_INDEX]
    assert chat_bundle.decode(trained_ids) == "".join(replies)
    assert np.count_nonzero(trained_ids == chat_bundle.tokenizer.token_to_id(eot)) == 2  # every turn's end


def test_labels_are_shifted_within_the_example(chat_bundle):
    conversation = Conversation([Message("user", "Hi"), Message("assistant", "Hello")])
    example = render_conversation(conversation, get_template("chatml"), chat_bundle, max_seq_length=64)
    ids, labels = example.input_ids, example.labels
    assert labels[-1] == IGNORE_INDEX
    trained = labels[:-1] != IGNORE_INDEX
    assert np.array_equal(labels[:-1][trained], ids[1:][trained])
    # the last input token is the end-of-turn: it is a target (of the position before it), never an input target
    assert ids[-2] == chat_bundle.tokenizer.token_to_id("<|im_end|>") and labels[-3] == ids[-2]
    header = chat_bundle.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert list(ids[: len(header)]) == header and np.all(labels[: len(header) - 1] == IGNORE_INDEX)
    assert example.num_trained_tokens == len(chat_bundle.encode("Hello<|im_end|>"))


def test_train_on_prompt_trains_everything_but_assistant_headers(chat_bundle):
    conversation = Conversation([Message("system", "S"), Message("user", "Hi"), Message("assistant", "Yo")])
    example = render_conversation(conversation, get_template("chatml"), chat_bundle, max_seq_length=64,
                                  train_on_prompt=True)
    untrained = [text for text, trained in render_for_display(example, chat_bundle) if not trained]
    # the first token is never a target; the assistant header is given at inference; all else is trained
    assert untrained == ["<|im_start|>", "<|im_start|>assistant\n"]


def _long_conversation() -> Conversation:
    return Conversation([Message("user", "one two three four five six"), Message("assistant", "alpha beta"),
                         Message("user", "again please"), Message("assistant", "gamma delta")])


def test_truncation_right_left_drop(chat_bundle):
    template = get_template("chatml")
    full = render_conversation(_long_conversation(), template, chat_bundle, max_seq_length=4096)
    limit = full.num_tokens - 6
    right = render_conversation(_long_conversation(), template, chat_bundle, max_seq_length=limit)
    left = render_conversation(_long_conversation(), template, chat_bundle, max_seq_length=limit,
                               truncation="left")
    assert np.array_equal(right.input_ids, full.input_ids[:limit])
    assert np.array_equal(right.labels[:-1], full.labels[: limit - 1]) and right.labels[-1] == IGNORE_INDEX
    assert np.array_equal(left.input_ids, full.input_ids[-limit:])
    assert np.array_equal(left.labels, full.labels[-limit:])
    assert right.num_truncated_tokens == left.num_truncated_tokens == 6 and full.num_truncated_tokens == 0
    assert render_conversation(_long_conversation(), template, chat_bundle, max_seq_length=limit,
                               truncation="drop") is None


def test_no_trained_token_after_truncation_returns_none(chat_bundle):
    # right-truncating inside the first user turn leaves no assistant token
    assert render_conversation(_long_conversation(), get_template("chatml"), chat_bundle, max_seq_length=4) is None
    with pytest.raises(UserError, match="unknown truncation 'middle'"):
        render_conversation(_long_conversation(), get_template("chatml"), chat_bundle, max_seq_length=8,
                            truncation="middle")


def test_preference_pair_trains_only_the_final_reply(chat_bundle):
    pair = normalize_preference({
        "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                   {"role": "user", "content": "Capital of France?"}],
        "chosen": "Paris.", "rejected": "Rome, I think."})
    chosen, rejected = render_preference_pair(pair, get_template("chatml"), chat_bundle, max_seq_length=256)
    assert _trained_runs(chosen, chat_bundle) == ["Paris.<|im_end|>"]
    assert _trained_runs(rejected, chat_bundle) == ["Rome, I think.<|im_end|>"]
    prompt_length = len(chat_bundle.encode(render_chat(
        get_template("chatml"), to_template_messages(pair.prompt.messages), add_generation_prompt=True)))
    assert np.array_equal(chosen.input_ids[:prompt_length], rejected.input_ids[:prompt_length])


def test_preference_pair_cuts_the_prompt_from_the_left_first(chat_bundle):
    pair = normalize_preference({"prompt": "word " * 30, "chosen": "yes", "rejected": "no"})
    full_chosen, full_rejected = render_preference_pair(pair, get_template("chatml"), chat_bundle, max_seq_length=512)
    limit = full_rejected.num_tokens - 5  # rejected "no" is at most as long as "yes"
    chosen, rejected = render_preference_pair(pair, get_template("chatml"), chat_bundle, max_seq_length=limit)
    cut = full_chosen.num_tokens - limit
    assert np.array_equal(chosen.input_ids, full_chosen.input_ids[cut:])
    assert np.array_equal(rejected.input_ids, full_rejected.input_ids[cut:])  # same prompt cut on both sides
    assert _trained_runs(chosen, chat_bundle) == ["yes<|im_end|>"]


def test_display_pieces_cover_the_text(tool_chat_record, chat_bundle):
    conversation = normalize_record(tool_chat_record)
    example = render_conversation(conversation, get_template("chatml"), chat_bundle, max_seq_length=4096)
    pieces = render_for_display(example, chat_bundle)
    assert "".join(text for text, _ in pieces) == chat_bundle.decode(example.input_ids)
    assert [trained for _, trained in pieces] == [False, True, False, True, False]


def test_template_that_rewrites_history_is_refused(chat_bundle):
    # renders only the last message: a conversation's start is not a prefix of the whole
    template = ChatTemplate("last_only", "{{ messages[-1].content if messages else '' }}<|im_end|>", "<|im_end|>")
    with pytest.raises(UserError, match="renders the start of a conversation differently"):
        render_conversation(_long_conversation(), template, chat_bundle, max_seq_length=64)


def test_any_prefix_consistent_template_gets_the_right_mask(chat_bundle):
    source = ("{% for m in messages %}### {{ m.role }}:\n{{ m.content }}<|eos|>\n{% endfor %}"
              "{% if add_generation_prompt %}### assistant:\n{% endif %}")
    template = ChatTemplate("custom", source, end_of_turn="<|eos|>")
    conversation = Conversation([Message("user", "Hi"), Message("assistant", "Hey"), Message("user", "Bye"),
                                 Message("assistant", "Ciao")])
    example = render_conversation(conversation, template, chat_bundle, max_seq_length=128)
    assert _trained_runs(example, chat_bundle) == ["Hey<|eos|>", "Ciao<|eos|>"]


def test_render_prompt_ends_with_the_assistant_header():
    prompt = render_prompt(Conversation([Message("user", "Hi")]), get_template("llama3"))
    assert prompt == ("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert required_special_tokens(get_template("chatml")) == [
        "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
        "<tool_response>", "</tool_response>"]

"""Our ids == `transformers` `apply_chat_template` ids once the template is in tokenizer_config.json."""

import shutil

import pytest

from tempering.data.chat import (
    get_template,
    normalize_record,
    render_chat,
    render_conversation,
    write_chat_template,
)

transformers = pytest.importorskip("transformers")

MULTI_TURN = [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": "Another, with  two spaces & <tags>?"},
    {"role": "assistant", "content": "  11, naïvely ✓"},
]
REASONING = [
    {"role": "user", "content": "Is 9 prime?"},
    {"role": "assistant", "content": "No.", "reasoning_content": "9 = 3 * 3.\nSo it has a divisor."},
]
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two integers <a> & <b>.",
                                           "parameters": {"type": "object", "properties": {
                                               "a": {"type": "integer"}, "b": {"type": "integer"}}}}}]
TOOL_CALL = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+3? Use the tool."},
    {"role": "assistant", "content": "", "reasoning_content": "A sum: call add.",
     "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
    {"role": "tool", "content": "5"},
    {"role": "assistant", "content": "2+3 = 5."},
]
CASES = {"multi_turn": (MULTI_TURN, None), "reasoning": (REASONING, None), "tool_call": (TOOL_CALL, TOOLS)}


@pytest.fixture(scope="module", params=["chatml", "llama3"])
def hf_and_template(request, chat_tokenizer_dir, tmp_path_factory):
    template = get_template(request.param)
    directory = shutil.copytree(chat_tokenizer_dir, tmp_path_factory.mktemp("hf") / "tok")
    write_chat_template(directory, template)
    return transformers.AutoTokenizer.from_pretrained(str(directory)), template


@pytest.mark.parametrize("case", sorted(CASES))
def test_ids_equal_apply_chat_template(hf_and_template, chat_bundle, case):
    hf_tokenizer, template = hf_and_template
    messages, tools = CASES[case]
    conversation = normalize_record({"messages": messages, "tools": tools})
    ours = render_conversation(conversation, template, chat_bundle, max_seq_length=4096)
    theirs = hf_tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False)
    assert ours.input_ids.tolist() == list(theirs)
    assert ours.input_ids.tolist() == chat_bundle.encode(hf_tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False))


def test_generation_prompt_matches(hf_and_template):
    hf_tokenizer, template = hf_and_template
    prompt = MULTI_TURN[:4]
    ours = render_chat(template, prompt, add_generation_prompt=True)
    assert ours == hf_tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert ours.endswith("assistant" + ("\n" if template.name == "chatml" else "<|end_header_id|>\n\n"))

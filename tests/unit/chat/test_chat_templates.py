"""Named chat templates render exactly the expected text; templates live in tokenizer_config.json."""

import json
import shutil

import pytest

from tempering.data.chat import (
    get_template,
    load_tokenizer_template,
    normalize_record,
    render_chat,
    template_from_tokenizer_config,
    to_template_messages,
    write_chat_template,
)
from tempering.errors import UserError

TOOLS_JSON = ('{"type": "function", "function": {"name": "add", "description": "Add two integers <a> & <b>.", '
              '"parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}')
TOOL_PROMPT = ("You can call the functions described by these JSON schemas:\n<tools>\n" + TOOLS_JSON + "\n</tools>\n"
               'To call one, answer with <tool_call>\n{"name": <function name>, "arguments": <JSON object>}\n</tool_call>')
CALL = '<think>\nA sum: call add.\n</think>\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'

CHATML_TEXT = (
    "<|im_start|>system\nYou are terse.\n\n" + TOOL_PROMPT + "<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+3? Use the tool.<|im_end|>\n"
    "<|im_start|>assistant\n" + CALL + "<|im_end|>\n"
    "<|im_start|>tool\n<tool_response>\n5\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n2+3 = 5.<|im_end|>\n"
)
LLAMA3_TEXT = (
    "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.\n\n" + TOOL_PROMPT + "<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3? Use the tool.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n" + CALL + "<|eot_id|>"
    "<|start_header_id|>tool<|end_header_id|>\n\n<tool_response>\n5\n</tool_response><|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n2+3 = 5.<|eot_id|>"
)


@pytest.mark.parametrize(("name", "expected"), [("chatml", CHATML_TEXT), ("llama3", LLAMA3_TEXT)])
def test_templates_render_the_full_expected_text(tool_chat_record, name, expected):
    conversation = normalize_record(tool_chat_record)
    assert render_chat(get_template(name), to_template_messages(conversation.messages), conversation.tools) == expected


def test_plain_chat_generation_prompt_and_end_of_turn():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "tool_calls": []},
                {"role": "user", "content": "Bye"}]
    chatml = get_template("chatml")
    assert chatml.end_of_turn == "<|im_end|>"
    assert render_chat(chatml, messages, add_generation_prompt=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    llama3 = get_template("llama3")
    assert llama3.end_of_turn == "<|eot_id|>"
    assert render_chat(llama3, messages[:1], add_generation_prompt=True) == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_content_before_tool_calls_and_several_calls():
    message = {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"x": "é"}}},
        {"type": "function", "function": {"name": "g", "arguments": "{\"y\": 1}"}}]}
    assert render_chat(get_template("chatml"), [message]) == (
        '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "f", "arguments": {"x": "é"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "g", "arguments": {"y": 1}}\n</tool_call><|im_end|>\n')


def test_unknown_template_suggests_the_closest():
    with pytest.raises(UserError, match="unknown chat template 'chatlm'; did you mean 'chatml'"):
        get_template("chatlm")
    with pytest.raises(UserError, match="no tokenizer directory"):
        get_template("tokenizer")


def test_write_and_read_back_a_tokenizer_template(chat_tokenizer_dir, tmp_path):
    directory = shutil.copytree(chat_tokenizer_dir, tmp_path / "tok")
    with pytest.raises(UserError, match="has no chat_template"):
        template_from_tokenizer_config(directory)
    before = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    write_chat_template(directory, get_template("llama3"))
    after = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert after == {**before, "chat_template": get_template("llama3").source}
    assert sorted(p.name for p in directory.iterdir()) == sorted(["tokenizer.json", "tokenizer_config.json",
                                                                  "special_tokens_map.json"])  # no temp files left
    template = get_template("tokenizer", tokenizer_dir=directory)
    assert (template.source, template.end_of_turn) == (get_template("llama3").source, "<|eot_id|>")


def test_tokenizer_template_end_of_turn_is_found_or_falls_back_to_eos(chat_tokenizer_dir, tmp_path):
    directory = shutil.copytree(chat_tokenizer_dir, tmp_path / "tok")
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}<|im_end|>\n{% endfor %}"
    write_chat_template(directory / "tokenizer_config.json", source)
    assert load_tokenizer_template(directory).end_of_turn == "<|im_end|>"
    (directory / "chat_template.jinja").write_text("stale", encoding="utf-8")
    with_eos = "{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}\n{% endfor %}"
    write_chat_template(directory, with_eos)  # keeps chat_template.jinja (which transformers prefers) in step
    assert template_from_tokenizer_config(directory) == with_eos
    template = load_tokenizer_template(directory)  # special-token variables come from the config
    assert render_chat(template, [{"role": "user", "content": "x"}]) == "user: x<|eos|>\n"
    write_chat_template(directory, "{% for m in messages %}{{ m.content }}\n{% endfor %}")
    assert load_tokenizer_template(directory).end_of_turn == "<|eos|>"  # none written: the eos token

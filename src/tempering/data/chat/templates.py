"""Named chat templates (Jinja, sandboxed) and their home in a tokenizer's `tokenizer_config.json`.

Templates read exactly the variables `transformers`' `apply_chat_template` passes (`messages`
as plain dicts, `tools`, `add_generation_prompt`, the special-token strings) and are rendered
in an environment configured like theirs (sandboxed, trim_blocks, lstrip_blocks, a `tojson`
that neither escapes HTML nor sorts keys). So writing a template into a checkpoint's
tokenizer_config.json makes `apply_chat_template` produce exactly the text, hence the ids,
we trained on. Every template ends an assistant turn with one end-of-turn token, the token
a trained model emits to stop.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tempering.errors import UserError
from tempering.json_files import read_json_object
from tempering.tokenizer.special import SPECIAL_TOKENS

CONFIG_FILE = "tokenizer_config.json"
JINJA_FILE = "chat_template.jinja"  # where newer `transformers` versions save a single template
FROM_TOKENIZER = "tokenizer"

# One body for every built-in template; the variables set in front of it choose the markup.
# Assistant turns: header, optional <think> reasoning, content, <tool_call> JSON per call, end of turn.
_BODY = r"""
{%- set tool_text = 'You can call the functions described by these JSON schemas:\n<tools>\n' -%}
{%- set call_text = '</tools>\nTo call one, answer with <tool_call>\n{"name": <function name>, "arguments": <JSON object>}\n</tool_call>' -%}
{%- if tools -%}
    {{- turn_open + 'system' + header_close -}}
    {%- if messages and messages[0].role == 'system' -%}{{- messages[0].content + '\n\n' -}}{%- endif -%}
    {{- tool_text -}}
    {%- for tool in tools -%}{{- tool | tojson + '\n' -}}{%- endfor -%}
    {{- call_text + end_of_turn + turn_gap -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if loop.first and message.role == 'system' and tools -%}
    {%- elif message.role == 'assistant' -%}
        {{- turn_open + 'assistant' + header_close -}}
        {%- if message.reasoning_content is string -%}
            {{- '<think>\n' + message.reasoning_content + '\n</think>\n' -}}
        {%- endif -%}
        {{- message.content or '' -}}
        {%- for call in message.tool_calls or [] -%}
            {%- set function = call.function if call.function is defined else call -%}
            {%- if not loop.first or message.content -%}{{- '\n' -}}{%- endif -%}
            {{- '<tool_call>\n{"name": ' + function.name | tojson + ', "arguments": ' -}}
            {%- if function.arguments is string -%}{{- function.arguments -}}
            {%- else -%}{{- function.arguments | tojson -}}{%- endif -%}
            {{- '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- end_of_turn + turn_gap -}}
    {%- elif message.role == 'tool' -%}
        {{- turn_open + 'tool' + header_close + '<tool_response>\n' + message.content + '\n</tool_response>' -}}
        {{- end_of_turn + turn_gap -}}
    {%- else -%}
        {{- turn_open + message.role + header_close + (message.content or '') + end_of_turn + turn_gap -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- turn_open + 'assistant' + header_close -}}{%- endif -%}
"""


def _markup(turn_open: str, header_close: str, end_of_turn: str, turn_gap: str) -> str:
    sets = {"turn_open": turn_open, "header_close": header_close, "end_of_turn": end_of_turn, "turn_gap": turn_gap}
    # json.dumps writes a string literal Jinja parses back to the same string.
    return "".join(f"{{%- set {name} = {json.dumps(value)} -%}}\n" for name, value in sets.items()) + _BODY.lstrip()


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template, its name, and the token that ends an assistant turn."""

    name: str
    source: str
    end_of_turn: str
    # Extra template variables, as `apply_chat_template` passes them (bos_token, eos_token, ...).
    variables: dict = field(default_factory=dict, compare=False)


TEMPLATES: dict[str, ChatTemplate] = {}


def register_template(template: ChatTemplate) -> ChatTemplate:
    """Add a template to the registry under its name (a name can be taken once)."""
    if template.name in TEMPLATES or template.name == FROM_TOKENIZER:
        raise ValueError(f"chat template {template.name!r} is already registered")
    TEMPLATES[template.name] = template
    return template


CHATML = register_template(ChatTemplate(
    "chatml", _markup("<|im_start|>", "\n", "<|im_end|>", "\n"), end_of_turn="<|im_end|>"))
LLAMA3 = register_template(ChatTemplate(
    "llama3", _markup("<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", ""), end_of_turn="<|eot_id|>"))


def get_template(name: str, tokenizer_dir: str | Path | None = None) -> ChatTemplate:
    """Return a registered template, or with name "tokenizer" the one in `tokenizer_dir`'s config."""
    if name == FROM_TOKENIZER:
        if tokenizer_dir is None:
            raise UserError("sft.template is 'tokenizer' but there is no tokenizer directory to read it from; "
                            "set tokenizer.path or name a template (chatml, llama3)")
        return load_tokenizer_template(tokenizer_dir)
    if name in TEMPLATES:
        return TEMPLATES[name]
    choices = [*TEMPLATES, FROM_TOKENIZER]
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown chat template {name!r}; {hint}choose one of {', '.join(choices)} (sft.template)")


def required_special_tokens(template: ChatTemplate) -> list[str]:
    """Tempering's reserved special tokens the template writes (to check a foreign tokenizer has them)."""
    return [token for token in SPECIAL_TOKENS if token in template.source or token == template.end_of_turn]


def render_chat(template: ChatTemplate, messages: list[dict], tools: list[dict] | None = None,
                *, add_generation_prompt: bool = False) -> str:
    """Render `apply_chat_template`-style message dicts to text with the template."""
    context = {**template.variables, "messages": messages, "tools": tools,
               "add_generation_prompt": add_generation_prompt}
    try:
        return _compile(template.source).render(**context)
    except jinja2.TemplateError as error:
        raise UserError(f"chat template {template.name!r} failed to render a conversation: {error}") from error


def template_from_tokenizer_config(path: str | Path) -> str:
    """Return the chat template stored with a tokenizer (chat_template.jinja or tokenizer_config.json)."""
    directory = _tokenizer_dir(path)
    jinja_file = directory / JINJA_FILE
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = _read_config(directory / CONFIG_FILE).get("chat_template")
    if isinstance(template, list):  # several named templates: [{"name", "template"}]
        named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise UserError(f"{directory / CONFIG_FILE} has no chat_template; name a template instead "
                        f"(sft.template: {' or '.join(TEMPLATES)})")
    return template


def load_tokenizer_template(path: str | Path) -> ChatTemplate:
    """Return the tokenizer's own template, with its end-of-turn token found by rendering a probe chat."""
    directory = _tokenizer_dir(path)
    source = template_from_tokenizer_config(directory)
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as error:
        raise UserError(f"{directory}: its chat template is not valid Jinja (line {error.lineno}: {error.message})") from error
    config = _read_config(directory / CONFIG_FILE)
    variables = {key: _token_text(value) for key, value in config.items()
                 if key.endswith("_token") and _token_text(value) is not None}
    probe = ChatTemplate(FROM_TOKENIZER, source, end_of_turn="", variables=variables)
    return ChatTemplate(FROM_TOKENIZER, source, _end_of_turn(probe, variables.get("eos_token")), variables)


def write_chat_template(path: str | Path, template: str | ChatTemplate) -> Path:
    """Set `chat_template` in a tokenizer's tokenizer_config.json (dir or file path), atomically."""
    source = template.source if isinstance(template, ChatTemplate) else template
    path = Path(path)
    config_file = path if path.name == CONFIG_FILE else path / CONFIG_FILE
    config = _read_config(config_file)
    config["chat_template"] = source
    _replace_file(config_file, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    jinja_file = config_file.parent / JINJA_FILE
    if jinja_file.is_file():  # transformers prefers this file over the config: keep the two equal
        _replace_file(jinja_file, source)
    return config_file


_PROBE_REPLY = "PROBE-REPLY-7f3a"
_LEADING_TOKEN = re.compile(r"\s*(<[^<>\s]{1,40}>)")


def _end_of_turn(template: ChatTemplate, eos_token: str | None) -> str:
    """The special token a template writes right after an assistant reply (else the eos token)."""
    text = render_chat(template, [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": _PROBE_REPLY}])
    after = text[text.find(_PROBE_REPLY) + len(_PROBE_REPLY):] if _PROBE_REPLY in text else ""
    match = _LEADING_TOKEN.match(after)
    if match:
        return match.group(1)
    if eos_token:
        return eos_token
    raise UserError("the tokenizer's chat template ends assistant turns with no special token and the "
                    "tokenizer has no eos_token; name a template instead (chatml, llama3)")


def _token_text(value: object) -> str | None:
    # transformers may store a special token as {"content": "...", ...} (a serialised AddedToken).
    value = value.get("content") if isinstance(value, dict) else value
    return value if isinstance(value, str) else None


def _tokenizer_dir(path: str | Path) -> Path:
    path = Path(path)
    directory = path.parent if path.is_file() else path
    if not directory.is_dir():
        raise UserError(f"{path}: no such tokenizer directory")
    return directory


def _read_config(config_file: Path) -> dict:
    if not config_file.is_file():
        raise UserError(f"{config_file} does not exist; save the tokenizer there first")
    return read_json_object(config_file)


def _replace_file(target: Path, text: str) -> None:
    """Write a sibling temp file, fsync it, rename it over target: readers see old or new, never half."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp:
            temp.write(text)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; chat text must stay as written.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return environment


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)

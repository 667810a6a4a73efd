"""Normalise chat records of every supported format to a `Conversation` (or `PreferencePair`).

Formats, told apart per record by their fields (first match wins):
  messages    {"messages": [{"role", "content", ...}], "tools"?}  (OpenAI style)
  preference  {"prompt", "chosen", "rejected"}  each a string or a message list
  tool_call   {"user_message", "tool_calls": [{name, arguments}], "tool_results", "assistant_response", "tools"?}
  reasoning   {"question", "reasoning", "answer"}
  alpaca      {"instruction", "input"?, "output"}
Every format also accepts an optional "system" string. A malformed record raises
`RecordError` (a `UserError`) saying which field is wrong; the loader adds file:line.
"""

from __future__ import annotations

import json

from tempering.data.chat.conversation import ROLES, Conversation, Message, PreferencePair
from tempering.errors import UserError

CHAT_FORMATS = ("messages", "alpaca", "tool_call", "reasoning")
# (format, fields whose presence identifies it), in detection order.
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("messages", ("messages",)),
    ("preference", ("chosen",)),
    ("preference", ("rejected",)),
    ("tool_call", ("user_message",)),
    ("reasoning", ("question",)),
    ("alpaca", ("instruction",)),
)
EXPECTED = ("messages | instruction+output (alpaca) | user_message+tool_calls+tool_results+"
            "assistant_response (tool_call) | question+reasoning+answer (reasoning) | prompt+chosen+rejected")
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


class RecordError(UserError):
    """A chat record that does not fit its format; the message names the field."""


def detect_format(record: dict) -> str:
    """Return the format a record's fields identify ("messages", "alpaca", ...)."""
    for name, fields in SIGNATURES:
        if all(key in record for key in fields):
            return name
    raise RecordError(f"record matches no chat format (fields: {_field_list(record)}); expected {EXPECTED}, "
                      f"or set the dataset's format or transform")


def normalize_record(record: object, format: str = "auto") -> Conversation:
    """Turn one record of `format` (or of the format its fields identify) into a Conversation."""
    record = _require_object(record)
    name = detect_format(record) if format == "auto" else format
    if name == "preference":
        raise RecordError("record is a preference pair (prompt/chosen/rejected); use it for DPO, not SFT")
    if name not in NORMALIZERS:
        raise RecordError(f"unknown chat format {format!r}; expected auto or one of {', '.join(CHAT_FORMATS)}")
    conversation = NORMALIZERS[name](record)
    if not any(message.role == "assistant" for message in conversation.messages):
        raise RecordError(f"{name} record has no assistant message to train on")
    return conversation


def normalize_preference(record: object) -> PreferencePair:
    """Turn a {prompt, chosen, rejected} record into a PreferencePair."""
    record = _require_object(record)
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise RecordError(f"preference record has no {key!r} (fields: {_field_list(record)})")
    prompt = _system(record) + _messages_or_text(record["prompt"], "prompt", "user")
    pair = PreferencePair(prompt=Conversation(prompt, _tools(record)),
                          chosen=_messages_or_text(record["chosen"], "chosen", "assistant"),
                          rejected=_messages_or_text(record["rejected"], "rejected", "assistant"))
    for key in ("chosen", "rejected"):
        if not any(message.role == "assistant" for message in getattr(pair, key)):
            raise RecordError(f"preference record's {key!r} has no assistant message")
    return pair


def parse_message(raw: object, where: str) -> Message:
    """Parse one OpenAI-style message dict; `where` names it in errors (e.g. "message 2")."""
    if not isinstance(raw, dict):
        raise RecordError(f"{where} must be an object with role and content, got {type(raw).__name__}")
    role = raw.get("role")
    if role not in ROLES:
        raise RecordError(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
    tool_calls = raw.get("tool_calls") or None
    if tool_calls is not None and role != "assistant":
        raise RecordError(f"{where} is a {role} message with tool_calls; only assistant messages call tools")
    content = raw.get("content")
    if content is None and role != "assistant":
        raise RecordError(f"{where} ({role}) has no content")
    return Message(
        role=role,
        content=_content_text(content, where),
        reasoning=_optional_text(raw, REASONING_KEYS, where),
        tool_calls=_tool_calls(tool_calls, where) if tool_calls is not None else None,
        name=_optional_text(raw, ("name",), where),
        tool_call_id=_optional_text(raw, ("tool_call_id",), where),
    )


def parse_tool_call(raw: object, where: str) -> dict:
    """Return {"name", "arguments": dict} from {"function": {...}} or {"name", "arguments"} (JSON string or object)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{where} must be an object with name and arguments, got {type(raw).__name__}")
    function = raw["function"] if isinstance(raw.get("function"), dict) else raw
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise RecordError(f"{where} has no function name")
    arguments = function.get("arguments")
    if arguments is None:
        arguments = {}
    elif isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise RecordError(f"{where} ({name}): arguments is not valid JSON ({error.msg} at column "
                              f"{error.colno}): {arguments[:80]!r}") from error
    if not isinstance(arguments, dict):
        raise RecordError(f"{where} ({name}): arguments must be a JSON object, got {type(arguments).__name__}")
    return {"name": name, "arguments": arguments}


def _from_messages(record: dict) -> Conversation:
    raw = record["messages"]
    if not isinstance(raw, list) or not raw:
        raise RecordError("'messages' must be a non-empty list of {role, content} objects")
    messages = [parse_message(item, f"message {index}") for index, item in enumerate(raw, 1)]
    return Conversation(_system(record) + messages, _tools(record))


def _from_alpaca(record: dict) -> Conversation:
    instruction = _text(record, "instruction", "alpaca")
    extra = record.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RecordError(f"alpaca 'input' must be a string, got {type(extra).__name__}")
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return Conversation(_system(record) + [Message("user", prompt),
                                           Message("assistant", _text(record, "output", "alpaca"))])


def _from_tool_call(record: dict) -> Conversation:
    user = _text(record, "user_message", "tool_call")
    calls, results = _list(record, "tool_calls"), _list(record, "tool_results")
    if len(calls) != len(results):
        raise RecordError(f"tool_call record has {len(calls)} tool_calls but {len(results)} tool_results; "
                          f"give one result per call")
    parsed = [parse_tool_call(call, f"tool call {index}") for index, call in enumerate(calls, 1)]
    messages = [*_system(record), Message("user", user)]
    if parsed:
        messages.append(Message("assistant", "", tool_calls=parsed))
        messages += [Message("tool", _result_text(result), name=call["name"]) for call, result in zip(parsed, results, strict=True)]
    messages.append(Message("assistant", _text(record, "assistant_response", "tool_call")))
    return Conversation(messages, _tools(record))


def _from_reasoning(record: dict) -> Conversation:
    question = _text(record, "question", "reasoning")
    answer = Message("assistant", _text(record, "answer", "reasoning"),
                     reasoning=_text(record, "reasoning", "reasoning"))
    return Conversation(_system(record) + [Message("user", question), answer])


NORMALIZERS = {"messages": _from_messages, "alpaca": _from_alpaca, "tool_call": _from_tool_call,
               "reasoning": _from_reasoning}


def _require_object(record: object) -> dict:
    if not isinstance(record, dict):
        raise RecordError(f"a chat record must be a JSON object, got {type(record).__name__}")
    return record


def _field_list(record: dict) -> str:
    return ", ".join(map(str, record)) or "none"


def _text(record: dict, key: str, format: str) -> str:
    return _field(record, key, format, str, "a string")


def _list(record: dict, key: str) -> list:
    return _field(record, key, "tool_call", list, "a list")


def _field(record: dict, key: str, format: str, kind: type, described: str):
    if key not in record:
        raise RecordError(f"{format} record has no {key!r} (fields: {_field_list(record)})")
    value = record[key]
    if not isinstance(value, kind):
        raise RecordError(f"{format} {key!r} must be {described}, got {type(value).__name__}")
    return value


def _system(record: dict) -> list[Message]:
    system = record.get("system")
    if system is None or system == "":
        return []
    if not isinstance(system, str):
        raise RecordError(f"'system' must be a string, got {type(system).__name__}")
    return [Message("system", system)]


def _tools(record: dict) -> list[dict] | None:
    tools = record.get("tools")
    if isinstance(tools, str):  # some datasets store the schema list as a JSON string
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as error:
            raise RecordError(f"'tools' is a string but not valid JSON ({error.msg})") from error
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise RecordError("'tools' must be a list of JSON schema objects")
    return tools


def _content_text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text parts carry chat text
        if all(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
               for part in content):
            return "".join(part["text"] for part in content)
        raise RecordError(f"{where}: only text content parts ({{\"type\": \"text\", \"text\": ...}}) are supported")
    raise RecordError(f"{where}: content must be a string, got {type(content).__name__}")


def _optional_text(raw: dict, keys: tuple[str, ...], where: str) -> str | None:
    for key in keys:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RecordError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        return value
    return None


def _tool_calls(raw: object, where: str) -> list[dict]:
    if not isinstance(raw, list):
        raise RecordError(f"{where}: tool_calls must be a list, got {type(raw).__name__}")
    return [parse_tool_call(call, f"{where} tool call {index}") for index, call in enumerate(raw, 1)]


def _result_text(result: object) -> str:
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


def _messages_or_text(value: object, key: str, role: str) -> list[Message]:
    if isinstance(value, str):
        return [Message(role, value)]
    if isinstance(value, list) and value:
        return [parse_message(item, f"{key} message {index}") for index, item in enumerate(value, 1)]
    raise RecordError(f"preference {key!r} must be a string or a non-empty message list, got {type(value).__name__}")

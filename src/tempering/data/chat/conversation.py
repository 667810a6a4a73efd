"""The one internal form every chat format is normalised to: a conversation of messages.

`to_template_messages` turns it into the plain dicts `transformers`' `apply_chat_template`
passes to a chat template (tool calls as {"type": "function", "function": {...}}, reasoning
as `reasoning_content`), so our templates and theirs read the same variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    """One turn: role, text, and for assistants optional reasoning and tool calls."""

    role: Role
    content: str
    reasoning: str | None = None  # assistant thinking, rendered before the answer
    tool_calls: list[dict] | None = None  # [{"name": str, "arguments": dict}]
    name: str | None = None  # tool results: the tool that produced them
    tool_call_id: str | None = None  # tool results: the call they answer


@dataclass
class Conversation:
    """A chat: messages in order, plus the JSON schemas of the tools the assistant may call."""

    messages: list[Message]
    tools: list[dict] | None = None


@dataclass
class PreferencePair:
    """A prompt and two completions of it, the chosen one preferred over the rejected one."""

    prompt: Conversation
    chosen: list[Message] = field(default_factory=list)
    rejected: list[Message] = field(default_factory=list)


def to_template_message(message: Message) -> dict:
    """Return the `apply_chat_template`-style dict of one message (only the keys it has)."""
    out: dict = {"role": message.role, "content": message.content}
    if message.reasoning is not None:
        out["reasoning_content"] = message.reasoning
    if message.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            for call in message.tool_calls
        ]
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def to_template_messages(messages: list[Message]) -> list[dict]:
    """Return the `apply_chat_template`-style dicts of a list of messages."""
    return [to_template_message(message) for message in messages]

"""Chat data for SFT and DPO: formats -> `Conversation`, named templates, rendering with a loss mask."""

from tempering.data.chat.conversation import (
    Conversation,
    Message,
    PreferencePair,
    to_template_messages,
)
from tempering.data.chat.formats import (
    RecordError,
    detect_format,
    normalize_preference,
    normalize_record,
)
from tempering.data.chat.loading import (
    iter_conversations,
    load_conversations,
    load_preference_pairs,
)
from tempering.data.chat.render import (
    IGNORE_INDEX,
    RenderedExample,
    render_conversation,
    render_for_display,
    render_preference_pair,
    render_prompt,
)
from tempering.data.chat.templates import (
    TEMPLATES,
    ChatTemplate,
    get_template,
    load_tokenizer_template,
    register_template,
    render_chat,
    required_special_tokens,
    template_from_tokenizer_config,
    write_chat_template,
)
from tempering.data.chat.transforms import TRANSFORMS, get_transform, register_transform

__all__ = [
    "IGNORE_INDEX",
    "TEMPLATES",
    "TRANSFORMS",
    "ChatTemplate",
    "Conversation",
    "Message",
    "PreferencePair",
    "RecordError",
    "RenderedExample",
    "detect_format",
    "get_template",
    "get_transform",
    "iter_conversations",
    "load_conversations",
    "load_preference_pairs",
    "load_tokenizer_template",
    "normalize_preference",
    "normalize_record",
    "register_template",
    "register_transform",
    "render_chat",
    "render_conversation",
    "render_for_display",
    "render_preference_pair",
    "render_prompt",
    "required_special_tokens",
    "template_from_tokenizer_config",
    "to_template_messages",
    "write_chat_template",
]

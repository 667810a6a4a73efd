"""Render a conversation to token ids and shifted labels that train only the assistant's tokens.

How the loss mask is found, robustly for any prefix-consistent template: for each assistant
message i the template is rendered three times, on messages[:i] (text before its turn), on
messages[:i] with the generation prompt (… plus its role header) and on messages[:i+1]
(… through its end of turn). The characters between the header and the end-of-turn token
(inclusive) are the assistant's. The whole text is then tokenized once, exactly as
`apply_chat_template` would, and each token whose character offsets overlap a trained
span is trained (so a token that BPE merged across the header/content boundary, such as
"\n   " before indented code, is trained too: the model must produce it). Labels are shifted inside the example (`RenderedExample`), so examples
can be packed by concatenation without one example predicting the next one's first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from tempering.data.chat.conversation import Conversation, PreferencePair, to_template_messages
from tempering.data.chat.templates import ChatTemplate, render_chat
from tempering.errors import UserError
from tempering.tokenizer.bundle import TokenizerBundle

IGNORE_INDEX = -100
Truncation = Literal["right", "left", "drop"]
TRUNCATIONS = ("right", "left", "drop")


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields explicitly
class RenderedExample:
    """Token ids of one rendered example and its labels, already shifted for next-token prediction.

    Both arrays are int32 with the same length n. labels[i] is the target for the prediction
    made after reading input_ids[: i + 1]: input_ids[i + 1] when that token is trained, else
    IGNORE_INDEX (-100). labels[n - 1] is always -100. The loss is
    cross_entropy(logits[i], labels[i]) over positions with labels != -100, no further shift.
    """

    input_ids: np.ndarray  # int32 [n]
    labels: np.ndarray  # int32 [n]
    num_truncated_tokens: int = 0  # tokens cut by truncation (0 if the example fit)

    @property
    def num_tokens(self) -> int:
        """Length n of the example in tokens."""
        return len(self.input_ids)

    @property
    def num_trained_tokens(self) -> int:
        """Positions that carry a loss (labels != -100)."""
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))


def render_conversation(conversation: Conversation, template: ChatTemplate,
                        tokenizer: TokenizerBundle | Tokenizer, *, max_seq_length: int,
                        train_on_prompt: bool = False, truncation: Truncation = "right") -> RenderedExample | None:
    """Render, tokenize and mask one conversation; None if dropped or left with no trained token.

    Trained: each assistant message's reasoning, content, tool calls and end-of-turn token;
    never an assistant role header; with `train_on_prompt` also every other token.
    Truncation: "right" keeps the first max_seq_length tokens, "left" the last, "drop" returns None.
    """
    if truncation not in TRUNCATIONS:
        raise UserError(f"unknown truncation {truncation!r}; choose one of {', '.join(TRUNCATIONS)} (sft.truncation)")
    _check_length(max_seq_length)
    text, trained_chars = _render_masked(to_template_messages(conversation.messages), conversation.tools,
                                         template, first_trained=0, train_on_prompt=train_on_prompt)
    ids, trained = _tokenize(text, trained_chars, tokenizer)
    excess = len(ids) - max_seq_length
    if excess > 0:
        if truncation == "drop":
            return None
        keep = slice(0, max_seq_length) if truncation == "right" else slice(excess, None)
        ids, trained = ids[keep], trained[keep]
    return _example(ids, trained, max(excess, 0))


def render_prompt(conversation: Conversation, template: ChatTemplate) -> str:
    """Render a conversation followed by the assistant header, ready for the model to continue (generation)."""
    return render_chat(template, to_template_messages(conversation.messages), conversation.tools,
                       add_generation_prompt=True)


def render_preference_pair(pair: PreferencePair, template: ChatTemplate, tokenizer: TokenizerBundle | Tokenizer,
                           *, max_seq_length: int) -> tuple[RenderedExample, RenderedExample] | None:
    """Render prompt+chosen and prompt+rejected, training only the completions' assistant messages.

    Too long: the prompt is cut from the left (by the same number of tokens in both), never past
    the token before the first trained one; what is still too long is cut from the right.
    None if either side ends up with no trained token.
    """
    _check_length(max_seq_length)
    prompt = to_template_messages(pair.prompt.messages)
    sides = []
    for completion in (pair.chosen, pair.rejected):
        text, trained_chars = _render_masked(prompt + to_template_messages(completion), pair.prompt.tools,
                                             template, first_trained=len(prompt), train_on_prompt=False)
        sides.append(_tokenize(text, trained_chars, tokenizer))
    excess = max(len(ids) for ids, _ in sides) - max_seq_length
    first_trained = min(int(np.argmax(trained)) if trained.any() else 0 for _, trained in sides)
    left = min(max(excess, 0), max(first_trained - 1, 0))
    examples = []
    for ids, trained in sides:
        keep = slice(left, left + max_seq_length)
        example = _example(ids[keep], trained[keep], len(ids) - len(ids[keep]))
        if example is None:
            return None
        examples.append(example)
    return examples[0], examples[1]


def render_for_display(example: RenderedExample, tokenizer: TokenizerBundle | Tokenizer) -> list[tuple[str, bool]]:
    """Split an example into (text, trained) pieces: runs of tokens that are / are not loss targets.

    A token is trained when the label of the position before it is not -100. Pieces are decoded
    separately, so a character split across two pieces shows as U+FFFD.
    """
    trained = np.zeros(example.num_tokens, dtype=bool)
    trained[1:] = example.labels[:-1] != IGNORE_INDEX
    raw = _raw_tokenizer(tokenizer)
    pieces: list[tuple[str, bool]] = []
    start = 0
    for end in [*(np.flatnonzero(trained[1:] != trained[:-1]) + 1).tolist(), example.num_tokens]:
        if end > start:
            ids = example.input_ids[start:end].tolist()
            pieces.append((raw.decode(ids, skip_special_tokens=False), bool(trained[start])))
        start = end
    return pieces


def _check_length(max_seq_length: int) -> None:
    if max_seq_length < 2:
        raise UserError(f"max_seq_length must be at least 2 tokens, got {max_seq_length}")


def _render_masked(messages: list[dict], tools: list[dict] | None, template: ChatTemplate, *,
                   first_trained: int, train_on_prompt: bool) -> tuple[str, np.ndarray]:
    """Render messages; return the text and a per-character bool array of what is trained."""
    text = render_chat(template, messages, tools)
    trained = np.full(len(text), train_on_prompt, dtype=bool)
    for index in range(first_trained, len(messages)):
        if messages[index]["role"] != "assistant":
            continue
        turn_start, content_start, content_end = _assistant_turn(template, messages, tools, index, text)
        trained[turn_start:content_start] = False  # the role header is given at inference, never predicted
        trained[content_start:content_end] = True
    return text, trained


def _assistant_turn(template: ChatTemplate, messages: list[dict], tools: list[dict] | None, index: int,
                    text: str) -> tuple[int, int, int]:
    """Character offsets (turn start, content start, end of the end-of-turn token) of assistant message `index`."""
    before = render_chat(template, messages[:index], tools)
    header = render_chat(template, messages[:index], tools, add_generation_prompt=True)
    through = render_chat(template, messages[: index + 1], tools)
    if not (header.startswith(before) and through.startswith(header) and text.startswith(through)):
        raise UserError(
            f"chat template {template.name!r} renders the start of a conversation differently from the whole "
            f"(for instance it drops earlier turns' reasoning), so assistant turns cannot be located for the "
            f"loss mask; use sft.template chatml or llama3")
    end = through.rfind(template.end_of_turn, len(header))
    if end < 0:
        raise UserError(f"chat template {template.name!r} does not end assistant turns with "
                        f"{template.end_of_turn!r}; a model trained on it would never stop")
    return len(before), len(header), end + len(template.end_of_turn)


def _tokenize(text: str, trained_chars: np.ndarray, tokenizer: TokenizerBundle | Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of the whole text, and which tokens overlap a trained character."""
    raw = _raw_tokenizer(tokenizer)
    encoding = raw.encode(text, add_special_tokens=False)
    if raw.decode(encoding.ids, skip_special_tokens=False) != text:
        raise UserError("the tokenizer does not decode rendered chat text back to itself (a normalizer or "
                        "unknown characters change it), so the loss mask cannot be placed; use a byte-level "
                        "tokenizer such as one from `temper tokenizer train`")
    ids = np.asarray(encoding.ids, dtype=np.int32)
    offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)  # [num_tokens, (start, end)]
    trained_before = np.concatenate([[0], np.cumsum(trained_chars)])  # trained chars in text[:k]
    starts, ends = offsets[:, 0], offsets[:, 1]
    trained = trained_before[ends] > trained_before[starts]
    empty = (starts == ends) & (starts < len(text))
    trained[empty] = trained_chars[starts[empty]]
    return ids, trained


def _example(ids: np.ndarray, trained: np.ndarray, num_truncated: int) -> RenderedExample | None:
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    labels[:-1] = np.where(trained[1:], ids[1:], IGNORE_INDEX)
    if not np.any(labels != IGNORE_INDEX):
        return None
    return RenderedExample(input_ids=np.ascontiguousarray(ids, dtype=np.int32), labels=labels,
                           num_truncated_tokens=num_truncated)


def _raw_tokenizer(tokenizer: TokenizerBundle | Tokenizer) -> Tokenizer:
    return tokenizer.tokenizer if isinstance(tokenizer, TokenizerBundle) else tokenizer

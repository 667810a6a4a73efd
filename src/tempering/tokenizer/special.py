"""The special tokens every Tempering tokenizer reserves, with fixed ids 0..N-1.

Chat, reasoning and tool-call markers are reserved at tokenizer training time so that
later stages (SFT, DPO) never resize the embedding matrix. The order is part of the
contract: `<|bos|>` is id 0, `<|eos|>` id 1, `<|pad|>` id 2, and so on down the list.
"""

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"

CHAT_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

NUM_RESERVED = 8
RESERVED_TOKENS = tuple(f"<|reserved_{index}|>" for index in range(NUM_RESERVED))

SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD, *CHAT_TOKENS, *RESERVED_TOKENS)

# Every byte must stay encodable, so a vocabulary holds at least the specials plus 256 bytes.
NUM_BYTE_TOKENS = 256
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + NUM_BYTE_TOKENS + 1

"""Autoregressive sampling with a KV cache: greedy, temperature, top-k, top-p."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn


def filter_logits(logits: torch.Tensor, *, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask (V,) logits outside the top-k and outside the smallest set with mass >= top_p."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate_tokens(model: nn.Module, prompt_ids: list[int], *, max_new_tokens: int, eos_id: int | None,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    seed: int = 0, use_cache: bool = True, stop_ids: frozenset[int] = frozenset()) -> Iterator[int]:
    """Yield new token ids one by one until EOS or a stop id (not yielded) or max_new_tokens; greedy at temperature 0.

    `model` is a decoder with `arch.max_seq_len` and `new_kv_cache` (the llama family's DecoderLM).
    """
    device = next(model.parameters()).device
    limit = model.arch.max_seq_len
    ids = list(prompt_ids)[-(limit - 1):] if prompt_ids else [eos_id or 0]
    max_new_tokens = min(max_new_tokens, limit - len(ids))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    cache = model.new_kv_cache(1, len(ids) + max_new_tokens) if use_cache else None
    pending = ids
    for _ in range(max_new_tokens):
        inputs = torch.tensor([pending if use_cache else ids], device=device)
        logits = model(inputs, kv_cache=cache)[0, -1].float()
        next_id = _choose(logits, temperature, top_k, top_p, generator)
        if next_id == eos_id or next_id in stop_ids:
            return
        yield next_id
        ids.append(next_id)
        pending = [next_id]


def _choose(logits: torch.Tensor, temperature: float, top_k, top_p, generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(filter_logits(logits / temperature, top_k=top_k, top_p=top_p), dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def stream_text(tokens: Iterator[int], decode: Callable[[list[int]], str]) -> Iterator[str]:
    """Turn a token stream into text pieces; holds back bytes that are not yet a full character."""
    ids: list[int] = []
    shown = ""
    for token in tokens:
        ids.append(token)
        text = decode(ids)
        if text.endswith("\ufffd"):
            continue  # a multi-byte character split across tokens: wait for the rest
        yield text[len(shown):]
        shown = text
    text = decode(ids)
    if len(text) > len(shown):
        yield text[len(shown):]

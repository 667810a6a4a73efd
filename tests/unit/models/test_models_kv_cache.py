"""Incremental decoding with the KV cache matches full forward passes."""

import pytest
import torch

from tempering.models.llama.model import DecoderLM


def _greedy(model, prompt, num_new_tokens, use_cache):
    tokens = prompt
    cache = model.new_kv_cache(prompt.shape[0]) if use_cache else None
    step_logits = []
    next_input = prompt
    for _ in range(num_new_tokens):
        logits = model(next_input if use_cache else tokens, kv_cache=cache)[:, -1]
        step_logits.append(logits)
        next_token = logits.argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
        next_input = next_token
    return tokens, torch.stack(step_logits, dim=1)


@pytest.mark.parametrize("tie", [False, True])
def test_cached_greedy_decoding_equals_uncached(make_arch, tie):
    arch = make_arch(tie_embeddings=tie)
    torch.manual_seed(0)
    model = DecoderLM(arch).eval()
    prompt = torch.randint(0, arch.vocab_size, (2, 6))
    with torch.no_grad():
        cached_tokens, cached_logits = _greedy(model, prompt, 20, use_cache=True)
        plain_tokens, plain_logits = _greedy(model, prompt, 20, use_cache=False)
        full_logits = model(cached_tokens[:, :-1])[:, prompt.shape[1] - 1:]
    assert torch.equal(cached_tokens, plain_tokens)
    torch.testing.assert_close(cached_logits, plain_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached_logits, full_logits, atol=1e-5, rtol=0)


def test_prefill_in_chunks_matches_full_forward(make_arch):
    arch = make_arch()
    torch.manual_seed(1)
    model = DecoderLM(arch).eval()
    input_ids = torch.randint(0, arch.vocab_size, (2, 24))
    cache = model.new_kv_cache(2, max_len=32)
    with torch.no_grad():
        chunks = [model(input_ids[:, a:b], kv_cache=cache) for a, b in ((0, 10), (10, 11), (11, 24))]
        full = model(input_ids)
    assert cache.length == 24
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)


def test_cache_overflow_and_document_ids_are_rejected(make_arch):
    arch = make_arch()
    model = DecoderLM(arch).eval()
    cache = model.new_kv_cache(1, max_len=8)
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="8 positions"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
        cache.reset()
        with pytest.raises(ValueError, match="document_ids"):
            model(torch.zeros(1, 2, dtype=torch.long), document_ids=torch.zeros(1, 2, dtype=torch.long),
                  kv_cache=cache)

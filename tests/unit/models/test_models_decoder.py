"""Decoder behaviour: document masking, positions, GQA, tying, init, checkpointing."""

import pytest
import torch

from tempering.models import layers as layers_module
from tempering.models.llama.model import (
    DecoderLM,
    document_attention_bias,
    needs_document_mask,
    positions_from_documents,
)


def _model(arch, seed=0):
    torch.manual_seed(seed)
    return DecoderLM(arch).eval()


def test_positions_restart_per_document():
    document_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5], [3, 4, 4, 3, 3, 3]])
    expected = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5], [0, 0, 1, 0, 1, 2]])
    assert torch.equal(positions_from_documents(document_ids), expected)


def test_document_bias_blocks_other_documents_and_the_future():
    bias = document_attention_bias(torch.tensor([[0, 0, 1, 1]]), torch.float32)
    allowed = bias[0, 0] == 0
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert bias.shape == (1, 1, 4, 4)
    assert torch.equal(allowed, expected)
    assert torch.isneginf(bias[0, 0][~expected]).all()


def test_needs_document_mask():
    assert not needs_document_mask(torch.tensor([[0, 0, 0], [7, 7, 7]]))
    assert needs_document_mask(torch.tensor([[0, 0, 0], [7, 7, 8]]))


def test_packed_documents_equal_separate_documents(make_arch):
    arch = make_arch()
    model = _model(arch)
    doc_a = torch.randint(0, arch.vocab_size, (1, 11))
    doc_b = torch.randint(0, arch.vocab_size, (1, 7))
    doc_c = torch.randint(0, arch.vocab_size, (1, 18))
    packed = torch.stack([torch.cat([doc_a, doc_b], dim=1)[0], doc_c[0]])  # (2, 18)
    document_ids = torch.tensor([[0] * 11 + [1] * 7, [4] * 18])
    with torch.no_grad():
        logits = model(packed, document_ids=document_ids)
        torch.testing.assert_close(logits[:1, :11], model(doc_a), atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[:1, 11:], model(doc_b), atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[1:], model(doc_c), atol=1e-5, rtol=0)


def test_document_mask_under_bf16_autocast(make_arch):
    arch = make_arch()
    model = _model(arch)
    doc_a, doc_b = torch.randint(0, arch.vocab_size, (1, 9)), torch.randint(0, arch.vocab_size, (1, 5))
    document_ids = torch.tensor([[0] * 9 + [1] * 5])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        packed = model(torch.cat([doc_a, doc_b], dim=1), document_ids=document_ids)
        separate = torch.cat([model(doc_a), model(doc_b)], dim=1)
    assert packed.dtype == torch.bfloat16
    torch.testing.assert_close(packed.float(), separate.float(), atol=2e-2, rtol=0)


def test_gqa_fallback_equals_sdpa_gqa(make_arch, monkeypatch):
    arch = make_arch(n_heads=8, n_kv_heads=2)
    model = _model(arch)
    input_ids = torch.randint(0, arch.vocab_size, (2, 16))
    with torch.no_grad():
        native = model(input_ids)
        monkeypatch.setattr(layers_module, "_SDPA_HAS_GQA", False)
        repeated = model(input_ids)
    torch.testing.assert_close(native, repeated, atol=1e-5, rtol=0)
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (2 * 8, 64)


def test_tied_embeddings_share_storage_and_export_once(make_arch):
    model = _model(make_arch(tie_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    exported = model.export_state_dict()
    assert "lm_head.weight" not in exported
    assert "model.embed_tokens.weight" in exported
    untied = _model(make_arch(tie_embeddings=False))
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    assert "lm_head.weight" in untied.export_state_dict()


def test_load_exported_state_dict_restores_tied_model(make_arch):
    arch = make_arch(tie_embeddings=True)
    source, target = _model(arch, seed=0), _model(arch, seed=1)
    target.load_exported_state_dict(source.export_state_dict())
    assert target.lm_head.weight is target.model.embed_tokens.weight
    assert torch.equal(target.lm_head.weight, source.model.embed_tokens.weight)


def test_init_scales_residual_projections(make_arch):
    arch = make_arch(d_model=128, n_layers=8, n_heads=4, n_kv_heads=4, d_ff=256)
    model = _model(arch)
    layer = model.model.layers[3]
    assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.self_attn.o_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert layer.mlp.down_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert torch.equal(layer.input_layernorm.weight, torch.ones(128))


def test_gradient_checkpointing_gives_same_grads(make_arch):
    arch = make_arch()
    model = _model(arch).train()
    input_ids = torch.randint(0, arch.vocab_size, (2, 16))
    document_ids = torch.tensor([[0] * 10 + [1] * 6, [0] * 16])

    def grads(checkpointing):
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        model(input_ids, document_ids=document_ids).logsumexp(-1).mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_dropout_only_in_training(make_arch):
    arch = make_arch()
    torch.manual_seed(0)
    model = DecoderLM(arch, dropout=0.5)
    input_ids = torch.randint(0, arch.vocab_size, (1, 12))
    reference = _model(arch)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids), reference(input_ids), atol=0, rtol=0)
        model.train()
        assert not torch.allclose(model(input_ids), reference(input_ids), atol=1e-3)


def test_explicit_positions_match_default_and_rotary_is_relative(make_arch):
    arch = make_arch()
    model = _model(arch)
    input_ids = torch.randint(0, arch.vocab_size, (2, 10))
    positions = torch.arange(10).expand(2, 10)
    restarted = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]).expand(2, 10)
    with torch.no_grad():
        default = model(input_ids)
        torch.testing.assert_close(model(input_ids, position_ids=positions), default, atol=1e-6, rtol=0)
        # Rotary scores depend only on position differences: a uniform shift changes nothing.
        torch.testing.assert_close(model(input_ids, position_ids=positions + 5), default, atol=1e-4, rtol=0)
        assert not torch.allclose(model(input_ids, position_ids=restarted), default, atol=1e-3)


def test_meta_built_model_initialises_after_to_empty(make_arch):
    arch = make_arch(d_model=128, n_layers=8, n_heads=4, n_kv_heads=4, d_ff=256)
    with torch.device("meta"):
        model = DecoderLM(arch)
    model.to_empty(device="cpu")
    model.init_weights()
    reference = _model(arch)
    assert torch.equal(model.model.rope_cos, reference.model.rope_cos)
    assert torch.equal(model.model.rope_sin, reference.model.rope_sin)
    assert torch.equal(model.model.norm.weight, torch.ones(128))
    assert model.model.layers[0].mlp.down_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert model.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)

"""Our encoder against transformers' DistilBERT and BERT: names, counts, logits, configs and imports both ways."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tempering.errors import UserError
from tempering.models.encoder import ENCODER
from tempering.models.encoder.architecture import (
    EncoderArchitecture,
    count_parameters,
    expected_tensors,
)
from tempering.models.encoder.hf_config import HF_CLASSES, from_hf_config, to_hf_config
from tempering.models.encoder.hf_weights import import_weights
from tempering.models.encoder.model import EncoderModel, adapt_model
from tempering.models.family import SpecialTokenIds

transformers = pytest.importorskip("transformers")

SPECIAL = SpecialTokenIds(bos_id=None, eos_ids=(2,), pad_id=0)
LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG")
HEADS = {"mlm": dict(head="mlm"), "mlm-untied": dict(head="mlm", tie_embeddings=False),
         "ner": dict(head="token_classification", labels=LABELS), "none": dict(head="none")}


def make_arch(**overrides) -> EncoderArchitecture:
    dims = dict(vocab_size=300, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=64)
    return EncoderArchitecture(**{**dims, **overrides})


def hf_model(arch):
    config = transformers.AutoConfig.for_model(**to_hf_config(arch, dropout=0.0, special=SPECIAL))
    return getattr(transformers, HF_CLASSES[arch.head])(config).eval()


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random biases and LayerNorm parameters too, so those paths are exercised."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                param.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    return model.eval()


def batch(arch, seed: int = 0):
    """Ids plus a padding mask with ragged rows (padding exercises the key mask)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, arch.vocab_size, (3, 40), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, 25:] = 0
    mask[2, 7:] = 0
    return input_ids, mask


def assert_same_outputs(ours, theirs, arch, input_ids, mask):
    with torch.no_grad():
        out = theirs(input_ids=input_ids, attention_mask=mask)
        expected = out.last_hidden_state if arch.head == "none" else out.logits
        got = ours(input_ids, mask)
    keep = mask.bool()  # padded positions are garbage on both sides
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=0)


@pytest.fixture(params=list(HEADS))
def arch(request):
    return make_arch(**HEADS[request.param])


def hf_names(state: dict, arch) -> dict:
    """Our names as the HF class holds them: a bare DistilBertModel has no `distilbert.` prefix."""
    return {name.removeprefix("distilbert.") if arch.head == "none" else name: t for name, t in state.items()}


def test_parameter_names_count_and_expected_tensors_match_hf(arch):
    ours, theirs = EncoderModel(arch), hf_model(arch)
    assert list(hf_names(ours.state_dict(), arch)) == list(theirs.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == count_parameters(arch)
    exported = {name: tuple(t.shape) for name, t in ours.export_state_dict().items()}
    assert exported == expected_tensors(arch) == ENCODER.expected_tensors(arch)


def test_logits_equal_hf_with_copied_weights(arch):
    ours = randomised(EncoderModel(arch))
    theirs = hf_model(arch)
    theirs.load_state_dict(hf_names(ours.state_dict(), arch), strict=True)
    assert_same_outputs(ours, theirs, arch, *batch(arch))


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_a_padded_batch_gives_each_row_alone_values_and_gradients_and_zeros_at_padding(checkpointing):
    arch = make_arch(**HEADS["ner"])
    input_ids, mask = batch(arch)
    real = mask.bool()

    def run(rows):  # rows: [(ids, mask or None)]; loss on the real tokens; (hidden states, gradients)
        torch.manual_seed(0)
        model = randomised(EncoderModel(arch)).train()  # dropout 0: both runs see the same numbers
        model.gradient_checkpointing = checkpointing
        hiddens = [model.hidden_states(ids, row_mask) for ids, row_mask in rows]
        sum(model.classify(h).square().sum() if m is None else model.classify(h)[m.bool()].square().sum()
            for h, (_, m) in zip(hiddens, rows, strict=True)).backward()
        return [h.detach() for h in hiddens], {name: p.grad for name, p in model.named_parameters()}

    [padded], grads = run([(input_ids, mask)])
    alone, alone_grads = run([(input_ids[i:i + 1, :int(n)], None) for i, n in enumerate(mask.sum(1))])
    assert not padded[~real].any()  # padding is not computed: zeros
    for i, row in enumerate(alone):
        torch.testing.assert_close(padded[i, :row.shape[1]], row[0], atol=1e-6, rtol=0)
    for name, grad in alone_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("head", ["mlm", "ner"])
def test_saved_checkpoint_loads_in_auto_model_with_equal_logits(head, tmp_path):
    arch = make_arch(**HEADS[head])
    ours = randomised(EncoderModel(arch), seed=1)
    save_file(ours.export_state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(arch, dropout=0.1, special=SPECIAL)))
    auto = transformers.AutoModelForMaskedLM if head == "mlm" else transformers.AutoModelForTokenClassification
    theirs, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == HF_CLASSES[arch.head]
    assert not info["missing_keys"] and not info["unexpected_keys"]
    if head == "ner":
        assert theirs.config.id2label == dict(enumerate(LABELS))
        assert theirs.config.label2id == {label: i for i, label in enumerate(LABELS)}
    else:
        assert theirs.vocab_projector.weight.data_ptr() == theirs.distilbert.embeddings.word_embeddings.weight.data_ptr()
    assert_same_outputs(ours, theirs.eval(), arch, *batch(arch, seed=1))


def test_config_round_trips_through_hf(arch, tmp_path):
    hf_model(arch).save_pretrained(tmp_path)
    assert from_hf_config(json.loads((tmp_path / "config.json").read_text())) == arch


def hf_bert(head: str, **config):
    dims = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=64, type_vocab_size=2)
    if head == "ner":
        config.update(id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    bert_config = transformers.BertConfig(**dims, **config)
    cls = transformers.BertForTokenClassification if head == "ner" else transformers.BertForMaskedLM
    return randomised(cls(bert_config), seed=3)


@pytest.mark.parametrize("head", ["mlm", "ner"])
def test_bert_weights_import_with_equal_logits(head, tmp_path):
    bert = hf_bert(head)
    bert.save_pretrained(tmp_path)
    arch = from_hf_config(json.loads((tmp_path / "config.json").read_text()))
    assert arch == make_arch(**HEADS[head])
    ours = EncoderModel(arch).eval()
    ours.load_exported_state_dict(import_weights("bert", dict(bert.state_dict())))
    input_ids, mask = batch(arch, seed=2)
    with torch.no_grad():
        expected = bert(input_ids=input_ids, attention_mask=mask).logits  # token_type_ids: all 0
        torch.testing.assert_close(ours(input_ids, mask)[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)


def test_bare_distilbert_weights_get_their_prefix_back():
    arch = make_arch(head="none")
    bare = transformers.DistilBertModel(transformers.AutoConfig.for_model(
        **to_hf_config(arch, dropout=0.0, special=SPECIAL)))
    assert all(not name.startswith("distilbert.") for name in bare.state_dict())
    ours = EncoderModel(arch)
    ours.load_exported_state_dict(import_weights("distilbert", dict(bare.state_dict())))


@pytest.mark.parametrize(("key", "value"), [("hidden_act", "relu"), ("position_embedding_type", "relative_key"),
                                             ("layer_norm_eps", 1e-5), ("is_decoder", True)])
def test_bert_configs_the_encoder_cannot_reproduce_are_refused_naming_the_key(key, value):
    config = hf_bert("mlm").config.to_dict() | {key: value}
    with pytest.raises(UserError, match=key):
        from_hf_config(config)


def test_sinusoidal_distilbert_is_refused():
    config = to_hf_config(make_arch(), dropout=0.0, special=SPECIAL) | {"sinusoidal_pos_embds": True}
    with pytest.raises(UserError, match="sinusoidal_pos_embds"):
        from_hf_config(config)


def test_adapt_keeps_backbone_and_label_rows_by_name_and_starts_new_labels_fresh():
    old = randomised(EncoderModel(make_arch(head="token_classification", labels=("O", "B-PER", "I-PER"))))
    merged = make_arch(head="token_classification", labels=("O", "B-PER", "I-PER", "B-ORG", "I-ORG"))
    torch.manual_seed(5)
    new = adapt_model(old, merged)
    old_state, new_state = old.export_state_dict(), new.export_state_dict()
    for name, tensor in old_state.items():
        if not name.startswith("classifier."):
            assert torch.equal(new_state[name], tensor), name
    assert torch.equal(new_state["classifier.weight"][:3], old_state["classifier.weight"])
    assert torch.equal(new_state["classifier.bias"][:3], old_state["classifier.bias"])
    assert new_state["classifier.weight"][3:].abs().sum() > 0  # initialised, not zeros
    assert torch.equal(new_state["classifier.bias"][3:], torch.zeros(2))


def test_mlm_backbone_adapts_to_a_token_classification_head():
    mlm = randomised(EncoderModel(make_arch()))
    ner = adapt_model(mlm, make_arch(head="token_classification", labels=LABELS))
    shared = [name for name in ner.export_state_dict() if name.startswith("distilbert.")]
    assert shared and all(torch.equal(ner.state_dict()[n], mlm.state_dict()[n]) for n in shared)

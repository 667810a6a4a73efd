"""Translate between an `EncoderArchitecture` and Hugging Face `config.json` (DistilBERT out; DistilBERT and BERT in).

Checkpoints are written as DistilBERT (`DistilBertForMaskedLM`, `DistilBertForTokenClassification`
with `id2label`/`label2id`, or `DistilBertModel`). A BERT directory reads into the same
architecture: BERT's blocks are DistilBERT's under other names, and its token-type embedding
(type 0, the only one single sentences use) folds into the position embeddings at import
(`hf_weights.py`). Hand-written because it is a field mapping; what the encoder cannot
reproduce (another activation or LayerNorm epsilon, sinusoidal or relative positions) is a
UserError naming the key.
"""

from __future__ import annotations

from typing import Any

from tempering.errors import UserError
from tempering.models.encoder.architecture import NORM_EPS, EncoderArchitecture
from tempering.models.family import SpecialTokenIds, reading_hf_config

HF_MODEL_TYPES = ("distilbert", "bert")
HF_CLASSES = {"mlm": "DistilBertForMaskedLM", "token_classification": "DistilBertForTokenClassification",
              "none": "DistilBertModel"}
_HEADS_BY_CLASS_SUFFIX = {"ForMaskedLM": "mlm", "ForPreTraining": "mlm", "ForTokenClassification": "token_classification",
                          "Model": "none"}


def to_hf_config(arch: EncoderArchitecture, *, dropout: float, special: SpecialTokenIds) -> dict[str, Any]:
    """Return `config.json` content that transformers loads as the DistilBERT class of `arch.head`."""
    config = {
        "architectures": [HF_CLASSES[arch.head]],
        "model_type": "distilbert",
        "vocab_size": arch.vocab_size,
        "dim": arch.d_model,
        "n_layers": arch.n_layers,
        "n_heads": arch.n_heads,
        "hidden_dim": arch.d_ff,
        "max_position_embeddings": arch.max_seq_len,
        "sinusoidal_pos_embds": False,
        "activation": arch.activation,
        "dropout": dropout,
        "attention_dropout": dropout,
        "initializer_range": 0.02,
        "tie_word_embeddings": arch.tie_embeddings,
        "torch_dtype": "float32",
        "pad_token_id": special.pad_id,
        "bos_token_id": special.bos_id,
        "eos_token_id": special.eos_ids[0] if special.eos_ids else None,
    }
    if arch.head == "token_classification":
        config["id2label"] = {str(index): label for index, label in enumerate(arch.labels)}
        config["label2id"] = {label: index for index, label in enumerate(arch.labels)}
    return config


def from_hf_config(config: dict[str, Any], *, where: str | None = None) -> EncoderArchitecture:
    """Return the architecture of a DistilBERT or BERT `config.json`; UserError names an unsupported key.

    The head comes from `architectures` (…ForMaskedLM, …ForTokenClassification, …Model).
    """
    kind = config.get("model_type")
    if kind not in HF_MODEL_TYPES:
        raise UserError(f"model_type is {kind!r}; the encoder family supports {', '.join(HF_MODEL_TYPES)}",
                        where=where)
    with reading_hf_config(kind, where):
        dims = _distilbert_dims(config, where) if kind == "distilbert" else _bert_dims(config, where)
        head = _head(config, where)
        labels = _labels(config, where) if head == "token_classification" else ()
        arch = EncoderArchitecture(**dims, tie_embeddings=bool(config.get("tie_word_embeddings", True)),
                                   head=head, labels=labels)
    arch.check()
    return arch


def _distilbert_dims(config: dict[str, Any], where: str | None) -> dict[str, Any]:
    if config.get("sinusoidal_pos_embds"):
        raise UserError("sinusoidal_pos_embds is true; only learned position embeddings are supported", where=where)
    _check_activation(config.get("activation", "gelu"), "activation", where)
    return {"vocab_size": int(config["vocab_size"]), "d_model": int(config["dim"]),
            "n_layers": int(config["n_layers"]), "n_heads": int(config["n_heads"]),
            "d_ff": int(config["hidden_dim"]), "max_seq_len": int(config.get("max_position_embeddings", 512))}


def _bert_dims(config: dict[str, Any], where: str | None) -> dict[str, Any]:
    _check_activation(config.get("hidden_act", "gelu"), "hidden_act", where)
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"position_embedding_type is {config['position_embedding_type']!r}; only 'absolute' "
                        "(learned) positions are supported", where=where)
    eps = float(config.get("layer_norm_eps", NORM_EPS))
    if eps != NORM_EPS:
        raise UserError(f"layer_norm_eps is {eps:g}; the encoder (DistilBERT) uses {NORM_EPS:g}", where=where)
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise UserError("is_decoder / add_cross_attention is set; only a bidirectional BERT encoder is supported",
                        where=where)
    return {"vocab_size": int(config["vocab_size"]), "d_model": int(config["hidden_size"]),
            "n_layers": int(config["num_hidden_layers"]), "n_heads": int(config["num_attention_heads"]),
            "d_ff": int(config["intermediate_size"]), "max_seq_len": int(config.get("max_position_embeddings", 512))}


def _check_activation(value: object, key: str, where: str | None) -> None:
    if value != "gelu":
        raise UserError(f"{key} is {value!r}; only 'gelu' is supported", where=where)


def _head(config: dict[str, Any], where: str | None) -> str:
    for name in config.get("architectures") or []:
        for suffix, head in _HEADS_BY_CLASS_SUFFIX.items():
            if isinstance(name, str) and name.endswith(suffix):
                return head
    raise UserError(f"architectures is {config.get('architectures')}; the encoder family reads masked-LM "
                    "(…ForMaskedLM), token-classification (…ForTokenClassification) and bare (…Model) encoders",
                    where=where)


def _labels(config: dict[str, Any], where: str | None) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise UserError("a token-classification config needs id2label (label names by id)", where=where)
    ids = sorted(int(key) for key in id2label)
    if ids != list(range(len(ids))):
        raise UserError(f"id2label ids must be 0..{len(ids) - 1}, got {ids}", where=where)
    return tuple(str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in ids)

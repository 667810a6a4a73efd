"""Translate between an `Architecture` and Hugging Face `LlamaConfig` JSON.

Weights need no translation (the parameter names already match), so export and
import are only this config mapping. Hand-written because it is a field mapping;
importing `transformers` for it would make that package a hard dependency.
"""

from __future__ import annotations

from typing import Any

from tempering.config.presets import Architecture
from tempering.errors import UserError


def to_hf_config(arch: Architecture, *, dropout: float = 0.0, bos_id: int | None,
                 eos_id: int | None, pad_id: int | None) -> dict[str, Any]:
    """Return `config.json` content that `transformers` loads as a `LlamaForCausalLM`."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.d_model,
        "intermediate_size": arch.d_ff,
        "num_hidden_layers": arch.n_layers,
        "num_attention_heads": arch.n_heads,
        "num_key_value_heads": arch.n_kv_heads,
        "head_dim": arch.head_dim,
        "max_position_embeddings": arch.max_seq_len,
        # transformers 5 reads `rope_parameters`; 4.x reads `rope_theta`. Both load silently.
        "rope_theta": arch.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": arch.rope_theta},
        "rms_norm_eps": arch.norm_eps,
        "tie_word_embeddings": arch.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": dropout,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }


def from_hf_config(config: dict[str, Any], *, where: str | None = None) -> Architecture:
    """Return the Architecture of an HF Llama `config.json`; UserError names an unsupported key."""
    _check_supported(config, where)
    try:
        hidden_size = int(config["hidden_size"])
        n_heads = int(config["num_attention_heads"])
        arch = Architecture(
            vocab_size=int(config["vocab_size"]),
            d_model=hidden_size,
            n_layers=int(config["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            d_ff=int(config["intermediate_size"]),
            max_seq_len=int(config.get("max_position_embeddings", 2048)),
            rope_theta=float(_rope_theta(config)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        )
    except KeyError as missing:
        raise UserError(f"config has no {missing.args[0]!r}, which a Llama model needs",
                        where=where) from None
    head_dim = config.get("head_dim")
    if head_dim is not None and int(head_dim) != arch.head_dim:
        raise UserError(f"head_dim {head_dim} differs from hidden_size/num_attention_heads "
                        f"({arch.head_dim}); only the standard head width is supported", where=where)
    arch.check()
    return arch


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    return params.get("rope_theta", config.get("rope_theta", 10000.0))


def _check_supported(config: dict[str, Any], where: str | None) -> None:
    """Raise UserError naming the first key whose value this model cannot reproduce."""
    model_type = config.get("model_type")
    if model_type != "llama":
        raise UserError(f"model_type is {model_type!r}; only 'llama' decoders are supported",
                        where=where)
    if config.get("rope_scaling"):
        raise UserError("rope_scaling is set; only plain rotary embeddings are supported "
                        "(remove rope_scaling)", where=where)
    rope_type = (config.get("rope_parameters") or {}).get("rope_type", "default")
    if rope_type != "default":
        raise UserError(f"rope_parameters.rope_type is {rope_type!r}; only 'default' is supported",
                        where=where)
    if config.get("hidden_act", "silu") != "silu":
        raise UserError(f"hidden_act is {config['hidden_act']!r}; only 'silu' is supported",
                        where=where)
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise UserError(f"{key} is true; only bias-free Llama layers are supported", where=where)

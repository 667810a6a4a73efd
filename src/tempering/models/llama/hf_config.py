"""Translate between an `Architecture` and Hugging Face `config.json` for Llama, Mistral, Qwen2 and Qwen3.

Weights need no translation (the parameter names already match), so export and import
are only this config mapping. Hand-written because it is a field mapping; importing
`transformers` for it would make that package a hard dependency. What our decoder cannot
reproduce (rope scaling, sliding-window attention, another activation, MLP biases) is a
UserError naming the key, never a silently different model.
"""

from __future__ import annotations

from typing import Any

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds, reading_hf_config
from tempering.models.llama.architecture import HF_MODEL_TYPES, Architecture

HF_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
              "qwen3": "Qwen3ForCausalLM"}


def to_hf_config(arch: Architecture, *, dropout: float = 0.0, special: SpecialTokenIds) -> dict[str, Any]:
    """Return `config.json` content that transformers loads with the variant's own class (LlamaForCausalLM, ...)."""
    kind = arch.hf_model_type
    config = {
        "architectures": [HF_CLASSES[kind]],
        "model_type": kind,
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
        "attention_dropout": dropout,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "bos_token_id": special.bos_id,
        "eos_token_id": special.eos_ids[0] if special.eos_ids else None,
        "pad_token_id": special.pad_id,
    }
    if kind in ("llama", "qwen3"):
        config["attention_bias"] = arch.attention_bias
    if kind == "llama":
        config["mlp_bias"] = False
    if kind != "llama":  # full attention everywhere; Mistral's default window would otherwise apply
        config.update(sliding_window=None, use_sliding_window=False)
    if kind in ("qwen2", "qwen3"):
        config["layer_types"] = ["full_attention"] * arch.n_layers
    return config


def from_hf_config(config: dict[str, Any], *, where: str | None = None) -> Architecture:
    """Return the Architecture of an HF Llama/Mistral/Qwen2/Qwen3 `config.json`; UserError names an unsupported key."""
    kind = _check_supported(config, where)
    with reading_hf_config(kind, where):
        hidden_size = int(config["hidden_size"])
        n_heads = int(config["num_attention_heads"])
        head_dim = config.get("head_dim")
        bias = bool(config.get("attention_bias", False))
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
            # Keep the default (derived) form when the explicit width is the standard one.
            attention_head_dim=None if head_dim in (None, hidden_size // n_heads) else int(head_dim),
            attention_bias=True if kind == "qwen2" else bias,
            attention_out_bias=bias if kind in ("llama", "qwen3") else False,
            qk_norm=kind == "qwen3",
            hf_model_type=kind,
        )
    arch.check()
    return arch


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    return params.get("rope_theta", config.get("rope_theta", 10000.0))


def _check_supported(config: dict[str, Any], where: str | None) -> str:
    """Return the model_type; raise UserError naming the first key whose value this model cannot reproduce."""
    kind = config.get("model_type")
    if kind not in HF_MODEL_TYPES:
        raise UserError(f"model_type is {kind!r}; the decoder family supports {', '.join(HF_MODEL_TYPES)}",
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
    if config.get("mlp_bias"):
        raise UserError("mlp_bias is true; only bias-free MLP layers are supported", where=where)
    _check_full_attention(config, kind, where)
    return kind


def _check_full_attention(config: dict[str, Any], kind: str, where: str | None) -> None:
    """Sliding-window attention is only accepted where it cannot take effect."""
    window = config.get("sliding_window")
    if kind == "mistral" and window is not None and int(window) < int(config.get("max_position_embeddings", 0)):
        raise UserError(f"sliding_window is {window}, shorter than max_position_embeddings "
                        f"({config.get('max_position_embeddings')}); sliding-window attention is not supported",
                        where=where)
    if kind in ("qwen2", "qwen3") and config.get("use_sliding_window"):
        raise UserError("use_sliding_window is true; sliding-window attention is not supported", where=where)
    layer_types = config.get("layer_types") or []
    if any(layer_type != "full_attention" for layer_type in layer_types):
        raise UserError(f"layer_types holds {sorted(set(layer_types) - {'full_attention'})}; only full attention "
                        "is supported", where=where)

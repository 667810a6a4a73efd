"""Translate between a `MoeArchitecture` and Hugging Face Mixtral's `config.json`.

Weights need no translation (the parameter names are Mixtral's), so export and import
are this field mapping. What our decoder cannot reproduce (sliding windows, rope
scaling, router jitter, another activation) is a UserError naming the key. Mixtral has
no z-loss field: `router_z_loss_coef` is written as an extra key transformers ignores.
"""

from __future__ import annotations

from typing import Any

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds
from tempering.models.moe.architecture import MoeArchitecture

HF_CLASS = "MixtralForCausalLM"


def to_hf_config(arch: MoeArchitecture, *, dropout: float = 0.0, special: SpecialTokenIds) -> dict[str, Any]:
    """Return `config.json` content that transformers loads as MixtralForCausalLM."""
    return {
        "architectures": [HF_CLASS],
        "model_type": "mixtral",
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.d_model,
        "intermediate_size": arch.d_ff,
        "num_hidden_layers": arch.n_layers,
        "num_attention_heads": arch.n_heads,
        "num_key_value_heads": arch.n_kv_heads,
        "head_dim": arch.head_dim,
        "num_local_experts": arch.n_experts,
        "num_experts_per_tok": arch.experts_per_token,
        "router_aux_loss_coef": arch.router_aux_loss_coef,
        "router_z_loss_coef": arch.router_z_loss_coef,
        "router_jitter_noise": 0.0,
        "output_router_logits": False,
        "max_position_embeddings": arch.max_seq_len,
        "rope_theta": arch.rope_theta,  # transformers 4.x reads this, 5.x rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": arch.rope_theta},
        "rms_norm_eps": arch.norm_eps,
        "tie_word_embeddings": arch.tie_embeddings,
        "hidden_act": "silu",
        "sliding_window": None,
        "attention_dropout": dropout,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "bos_token_id": special.bos_id,
        "eos_token_id": special.eos_ids[0] if special.eos_ids else None,
        "pad_token_id": special.pad_id,
    }


def from_hf_config(config: dict[str, Any], *, where: str | None = None) -> MoeArchitecture:
    """Return the MoeArchitecture of a Mixtral `config.json`; UserError names a key it cannot reproduce."""
    _check_supported(config, where)
    try:
        hidden_size = int(config["hidden_size"])
        n_heads = int(config["num_attention_heads"])
        head_dim = config.get("head_dim")
        arch = MoeArchitecture(
            vocab_size=int(config["vocab_size"]),
            d_model=hidden_size,
            n_layers=int(config["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            d_ff=int(config["intermediate_size"]),
            n_experts=int(config.get("num_local_experts", 8)),
            experts_per_token=int(config.get("num_experts_per_tok", 2)),
            max_seq_len=int(config.get("max_position_embeddings", 4096)),
            rope_theta=float((config.get("rope_parameters") or {}).get("rope_theta",
                                                                       config.get("rope_theta", 1e6))),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            attention_head_dim=None if head_dim in (None, hidden_size // n_heads) else int(head_dim),
            router_aux_loss_coef=float(config.get("router_aux_loss_coef", 0.001)),
            router_z_loss_coef=float(config.get("router_z_loss_coef", 0.0)),
        )
    except KeyError as missing:
        raise UserError(f"config has no {missing.args[0]!r}, which a mixtral model needs", where=where) from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"config holds a value of the wrong type ({exc})", where=where) from None
    arch.check()
    return arch


def _check_supported(config: dict[str, Any], where: str | None) -> None:
    """Raise UserError naming the first key whose value this model cannot reproduce."""
    if config.get("model_type") != "mixtral":
        raise UserError(f"model_type is {config.get('model_type')!r}; the moe family reads mixtral", where=where)
    rope_type = (config.get("rope_parameters") or {}).get("rope_type", "default")
    if config.get("rope_scaling") or rope_type != "default":
        raise UserError("rope scaling is set; only plain rotary embeddings are supported (remove rope_scaling)",
                        where=where)
    if config.get("hidden_act", "silu") != "silu":
        raise UserError(f"hidden_act is {config['hidden_act']!r}; only 'silu' is supported", where=where)
    window = config.get("sliding_window")
    if window is not None and int(window) < int(config.get("max_position_embeddings", 0)):
        raise UserError(f"sliding_window is {window}, shorter than max_position_embeddings "
                        f"({config.get('max_position_embeddings')}); sliding-window attention is not supported",
                        where=where)
    if config.get("router_jitter_noise"):
        raise UserError(f"router_jitter_noise is {config['router_jitter_noise']}; only 0 is supported", where=where)

"""Translate between a `MoeArchitecture` and Hugging Face Mixtral's (or Qwen2-MoE's) `config.json`.

Weights need no translation (the parameter names are Mixtral's, or Qwen2-MoE's for a model
with a shared expert), so export and import are this field mapping. What our decoder
cannot reproduce (sliding windows, rope scaling, router jitter, another activation; for
Qwen2-MoE also q/k/v biases, unnormalised top-k weights, dense layers) is a UserError
naming the key. Neither has a z-loss field: `router_z_loss_coef` is written as an extra
key transformers ignores.
"""

from __future__ import annotations

from typing import Any

from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds, reading_hf_config
from tempering.models.moe.architecture import HF_MODEL_TYPES, MoeArchitecture

HF_CLASSES = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM"}
MIXTRAL_ONLY_KEYS = ("num_local_experts", "router_jitter_noise")
# What transformers assumes for a key a config.json leaves out, per model type.
HF_DEFAULTS = {
    "mixtral": {"num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 4096,
                "rope_theta": 1e6, "rms_norm_eps": 1e-5},
    "qwen2_moe": {"num_experts": 60, "num_experts_per_tok": 4, "max_position_embeddings": 32768,
                  "rope_theta": 10000.0, "rms_norm_eps": 1e-6},
}


def to_hf_config(arch: MoeArchitecture, *, dropout: float = 0.0, special: SpecialTokenIds) -> dict[str, Any]:
    """Return `config.json` content that transformers loads as MixtralForCausalLM (Qwen2MoeForCausalLM with a shared expert)."""
    config = _mixtral_config(arch, dropout, special)
    return _as_qwen2_moe(config, arch) if arch.shared_expert_d_ff else config


def _mixtral_config(arch: MoeArchitecture, dropout: float, special: SpecialTokenIds) -> dict[str, Any]:
    return {
        "architectures": [HF_CLASSES["mixtral"]],
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


def _as_qwen2_moe(mixtral: dict[str, Any], arch: MoeArchitecture) -> dict[str, Any]:
    """Mixtral's config with Qwen2-MoE's expert keys, the shared expert, and the switches that make it our model."""
    config = {key: value for key, value in mixtral.items() if key not in MIXTRAL_ONLY_KEYS}
    config.update({
        "architectures": [HF_CLASSES["qwen2_moe"]],
        "model_type": "qwen2_moe",
        "intermediate_size": arch.d_ff,  # the width of dense layers, of which there are none
        "moe_intermediate_size": arch.d_ff,
        "shared_expert_intermediate_size": arch.shared_expert_d_ff,
        "num_experts": arch.n_experts,
        "norm_topk_prob": True,  # renormalise each token's top-k probabilities, as Mixtral does
        "decoder_sparse_step": 1,  # with no mlp_only_layers: every layer is an MoE layer
        "mlp_only_layers": [],
        "qkv_bias": False,  # transformers' default is True
        "use_sliding_window": False,
        "layer_types": ["full_attention"] * arch.n_layers,
    })
    return config


def from_hf_config(config: dict[str, Any], *, where: str | None = None) -> MoeArchitecture:
    """Return the MoeArchitecture of a Mixtral or Qwen2-MoE `config.json`; UserError names a key it cannot reproduce."""
    kind = _check_supported(config, where)
    qwen = kind == "qwen2_moe"
    config = {**HF_DEFAULTS[kind], **config}
    with reading_hf_config(kind, where):
        hidden_size = int(config["hidden_size"])
        n_heads = int(config["num_attention_heads"])
        head_dim = config.get("head_dim")
        arch = MoeArchitecture(
            vocab_size=int(config["vocab_size"]),
            d_model=hidden_size,
            n_layers=int(config["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            d_ff=int(config["moe_intermediate_size" if qwen else "intermediate_size"]),
            n_experts=int(config["num_experts" if qwen else "num_local_experts"]),
            experts_per_token=int(config["num_experts_per_tok"]),
            max_seq_len=int(config["max_position_embeddings"]),
            rope_theta=float((config.get("rope_parameters") or {}).get("rope_theta", config["rope_theta"])),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            norm_eps=float(config["rms_norm_eps"]),
            attention_head_dim=None if head_dim in (None, hidden_size // n_heads) else int(head_dim),
            router_aux_loss_coef=float(config.get("router_aux_loss_coef", 0.001)),
            router_z_loss_coef=float(config.get("router_z_loss_coef", 0.0)),
            shared_expert_d_ff=int(config["shared_expert_intermediate_size"]) if qwen else 0,
        )
    if qwen and not arch.shared_expert_d_ff:
        raise UserError("shared_expert_intermediate_size is 0; the moe family reads qwen2_moe models with a shared "
                        "expert (one without is a mixtral model)", where=where)
    arch.check()
    return arch


def _check_supported(config: dict[str, Any], where: str | None) -> str:
    """Return the model_type; raise UserError naming the first key whose value this model cannot reproduce."""
    kind = config.get("model_type")
    if kind not in HF_MODEL_TYPES:
        raise UserError(f"model_type is {kind!r}; the moe family reads {', '.join(HF_MODEL_TYPES)}", where=where)
    rope_type = (config.get("rope_parameters") or {}).get("rope_type", "default")
    if config.get("rope_scaling") or rope_type != "default":
        raise UserError("rope scaling is set; only plain rotary embeddings are supported (remove rope_scaling)",
                        where=where)
    if config.get("hidden_act", "silu") != "silu":
        raise UserError(f"hidden_act is {config['hidden_act']!r}; only 'silu' is supported", where=where)
    if kind == "mixtral":
        _check_mixtral(config, where)
    else:
        _check_qwen2_moe(config, where)
    return kind


def _check_mixtral(config: dict[str, Any], where: str | None) -> None:
    """Refuse a sliding window shorter than the context, and router jitter."""
    window = config.get("sliding_window")
    if window is not None and int(window) < int(config.get("max_position_embeddings", 0)):
        raise UserError(f"sliding_window is {window}, shorter than max_position_embeddings "
                        f"({config.get('max_position_embeddings')}); sliding-window attention is not supported",
                        where=where)
    if config.get("router_jitter_noise"):
        raise UserError(f"router_jitter_noise is {config['router_jitter_noise']}; only 0 is supported", where=where)


def _check_qwen2_moe(config: dict[str, Any], where: str | None) -> None:
    """Refuse what Qwen2-MoE can be but our decoder is not (transformers' defaults count where a key is missing)."""
    if config.get("use_sliding_window"):
        raise UserError("use_sliding_window is true; sliding-window attention is not supported", where=where)
    if config.get("qkv_bias", True):
        raise UserError("qkv_bias is true (or missing: transformers' default); the moe family has no q/k/v biases",
                        where=where)
    if not config.get("norm_topk_prob", False):
        raise UserError("norm_topk_prob is false (or missing: transformers' default); the moe family renormalises "
                        "each token's top-k router probabilities", where=where)
    if config.get("mlp_only_layers"):
        raise UserError(f"mlp_only_layers is {config['mlp_only_layers']}; every layer of the moe family is an MoE "
                        "layer", where=where)
    if int(config.get("decoder_sparse_step", 1)) != 1:
        raise UserError(f"decoder_sparse_step is {config['decoder_sparse_step']}; every layer of the moe family is "
                        "an MoE layer (1)", where=where)

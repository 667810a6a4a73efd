"""Build the model a checkpoint holds — its family read from the checkpoint — and load its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tempering import json_files
from tempering.checkpoint.io import Checkpoint, load_checkpoint
from tempering.checkpoint.paths import ADAPTER_CONFIG_FILE
from tempering.errors import UserError
from tempering.models.family import ModelFamily
from tempering.tokenizer import TokenizerBundle, load_tokenizer

ADAPTER_PREFIX = "base_model.model."  # peft's name for the wrapped model


@dataclass
class LoadedModel:
    """A model in eval mode, its family and architecture, the tokenizer saved beside it, and its checkpoint."""

    model: nn.Module
    family: ModelFamily
    arch: Any
    tokenizer: TokenizerBundle
    checkpoint: Checkpoint


def build_from_checkpoint(checkpoint: Checkpoint, *, dropout: float = 0.0) -> tuple[ModelFamily, Any, nn.Module]:
    """(family, architecture, model with the checkpoint's weights) on the CPU.

    A LoRA periodic checkpoint holds only its adapter: the model is then its base (meta.json
    `lora_base`) with the adapter merged.
    """
    family, arch = checkpoint.family, checkpoint.architecture()
    model = family.build(arch, dropout=dropout)
    weights = checkpoint.load_weights(device="cpu") if checkpoint.has_weights else _base_with_adapter(checkpoint)
    try:
        model.load_exported_state_dict(weights)
    except RuntimeError as exc:  # shape or name mismatch between config.json and the weights
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"checkpoint {checkpoint.path}: weights do not match config.json ({first})") from None
    return family, arch, model


def load_checkpoint_tokenizer(checkpoint: Checkpoint, tokenizer_path: str | None = None) -> TokenizerBundle:
    """The tokenizer a run from `checkpoint` uses: `tokenizer_path` when given, else the checkpoint's own."""
    if tokenizer_path is not None:
        return load_tokenizer(tokenizer_path)
    if checkpoint.tokenizer_dir is None:
        raise UserError(f"checkpoint {checkpoint.path} has no tokenizer.json; give the tokenizer it was trained "
                        "with (--tokenizer DIR)")
    return load_tokenizer(checkpoint.tokenizer_dir)


def load_model(path, *, select: str = "best", device: torch.device | str = "cpu") -> LoadedModel:
    """Resolve `path`, build the checkpoint's family and architecture, load its weights and tokenizer."""
    checkpoint = load_checkpoint(path, select)
    family, arch, model = build_from_checkpoint(checkpoint)
    if checkpoint.tokenizer_dir is None:
        raise UserError(f"checkpoint {checkpoint.path} has no tokenizer.json")
    tokenizer = load_tokenizer(checkpoint.tokenizer_dir)
    vocab_size = family.vocab_size(arch)
    if vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise UserError(f"checkpoint {checkpoint.path}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                        f"only {vocab_size}")
    model.to(device).eval()
    return LoadedModel(model, family, arch, tokenizer, checkpoint)


def _base_with_adapter(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The exported tensors of an adapter-only checkpoint: its base's, grown to its vocabulary, adapter merged."""
    base_path = checkpoint.meta.get("lora_base")
    if not base_path:
        raise UserError(f"checkpoint {checkpoint.path} holds a LoRA adapter but meta.json names no lora_base")
    base = load_checkpoint(base_path, "latest")
    weights = base.load_weights(device="cpu")
    rows = checkpoint.family.vocab_size(checkpoint.architecture())
    for name in ("model.embed_tokens.weight", "lm_head.weight"):  # a chat stage may have added tokens
        if name in weights and rows is not None and weights[name].shape[0] < rows:
            grown = weights[name].mean(0, keepdim=True).expand(rows - weights[name].shape[0], -1)
            weights[name] = torch.cat([weights[name], grown])
    config = json_files.read_json_object(checkpoint.adapter_dir / ADAPTER_CONFIG_FILE)
    scaling = float(config["lora_alpha"]) / int(config["r"])
    adapter = checkpoint.load_adapter()
    for key, lora_a in adapter.items():
        if ".lora_A." not in key:
            continue
        lora_b = adapter[key.replace(".lora_A.", ".lora_B.")]
        name = key.removeprefix(ADAPTER_PREFIX).replace(".lora_A.weight", ".weight")
        weights[name] = (weights[name].float() + scaling * (lora_b.float() @ lora_a.float())).to(weights[name].dtype)
    return weights

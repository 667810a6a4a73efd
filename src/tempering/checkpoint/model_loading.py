"""Load a model and its tokenizer from any checkpoint path (checkpoint dir or run dir)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tempering.checkpoint.io import Checkpoint, load_checkpoint
from tempering.errors import UserError
from tempering.models import DecoderLM, build_model
from tempering.models.hf import from_hf_config
from tempering.tokenizer import TokenizerBundle, load_tokenizer


@dataclass
class LoadedModel:
    """A model in eval mode, the tokenizer saved beside it, and the checkpoint it came from."""

    model: DecoderLM
    tokenizer: TokenizerBundle
    checkpoint: Checkpoint


def load_model(path, *, select: str = "best", device: torch.device | str = "cpu") -> LoadedModel:
    """Build the checkpoint's architecture, load its weights, and load its tokenizer."""
    checkpoint = load_checkpoint(path, select)
    arch = from_hf_config(checkpoint.hf_config, where=str(checkpoint.path / "config.json"))
    model = build_model(arch)
    try:
        model.load_exported_state_dict(checkpoint.load_weights(device="cpu"))
    except RuntimeError as exc:  # shape or name mismatch between config.json and the weights
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"checkpoint {checkpoint.path}: weights do not match config.json ({first})") from None
    if checkpoint.tokenizer_dir is None:
        raise UserError(f"checkpoint {checkpoint.path} has no tokenizer.json")
    tokenizer = load_tokenizer(checkpoint.tokenizer_dir)
    if tokenizer.vocab_size > arch.vocab_size:
        raise UserError(f"checkpoint {checkpoint.path}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                        f"only {arch.vocab_size}")
    model.to(device).eval()
    return LoadedModel(model, tokenizer, checkpoint)

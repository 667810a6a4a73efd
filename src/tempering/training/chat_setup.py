"""What SFT and DPO share: the starting checkpoint, the chat template, the run's tokenizer, splits.

The template's special tokens must exist in the tokenizer; a foreign tokenizer that lacks
them gets them added and the model's embeddings grow to match (said out loud). The run
keeps its own tokenizer copy with `chat_template` set, and every checkpoint carries it, so
`transformers`' `apply_chat_template` reproduces the training token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import Checkpoint, load_checkpoint
from tempering.checkpoint.resolution import resolve_source_checkpoint
from tempering.config.presets import Architecture
from tempering.config.schema import Config
from tempering.data.chat import (
    ChatTemplate,
    get_template,
    required_special_tokens,
    write_chat_template,
)
from tempering.data.packing import split_documents
from tempering.errors import UserError
from tempering.models import DecoderLM, build_model
from tempering.models.hf import from_hf_config, to_hf_config
from tempering.tokenizer import TokenizerBundle, load_tokenizer
from tempering.tracking.console import console
from tempering.training.device import pick_device
from tempering.training.run_dir import prepare_run_dir


@dataclass
class ChatStart:
    """The loaded starting point of a chat stage."""

    source: Checkpoint
    arch: Architecture  # after any vocabulary growth
    tokenizer: TokenizerBundle
    template: ChatTemplate
    model: DecoderLM


def load_chat_start(config: Config, cli_checkpoint: str | None) -> ChatStart:
    """Resolve the source checkpoint, its tokenizer and the template; build the model from its weights."""
    source_path, origin = resolve_source_checkpoint(config, cli_checkpoint)
    console.print(f"source checkpoint: {origin}")
    source = load_checkpoint(source_path)
    arch = from_hf_config(source.hf_config, where=str(source.path / "config.json"))
    tokenizer = load_tokenizer(config.tokenizer.path or source.tokenizer_dir or "")
    template = get_template(config.sft.template, tokenizer.path)
    missing = [t for t in required_special_tokens(template) if tokenizer.tokenizer.token_to_id(t) is None]
    if missing:
        tokenizer.tokenizer.add_special_tokens(missing)
        tokenizer = TokenizerBundle.from_tokenizer(tokenizer.tokenizer, tokenizer.path)
        console.print(f"template {template.name} needs {', '.join(missing)}, which the tokenizer lacked: added")
    model = build_model(arch, dropout=config.model.dropout)
    model.load_exported_state_dict(source.load_weights())
    if tokenizer.vocab_size > arch.vocab_size:
        console.print(f"resizing the embeddings from {arch.vocab_size} to {tokenizer.vocab_size} tokens "
                      "(new rows start at the mean embedding)")
        model = grow_vocabulary(model, tokenizer.vocab_size, dropout=config.model.dropout)
        arch = model.arch
    if config.data.seq_len > arch.max_seq_len:
        raise UserError(f"data.seq_len ({config.data.seq_len}) is longer than the model's context ({arch.max_seq_len})")
    return ChatStart(source, arch, tokenizer, template, model)


@torch.no_grad()
def grow_vocabulary(model: DecoderLM, vocab_size: int, *, dropout: float = 0.0) -> DecoderLM:
    """A copy of `model` with `vocab_size` embedding (and head) rows; new rows are the mean of the old."""
    old = model.arch.vocab_size
    grown = build_model(model.arch.with_overrides(vocab_size=vocab_size), dropout=dropout)
    state = model.export_state_dict()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in state:
            weight = state[name]
            state[name] = torch.cat([weight, weight.mean(0, keepdim=True).expand(vocab_size - old, -1)])
    grown.load_exported_state_dict(state)
    return grown


def start_chat_run(config: Config, start: ChatStart, *, restart: bool) -> tuple[Path, Path, torch.device]:
    """Open the run dir (nothing is written before this), write its tokenizer, place the model."""
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)
    tokenizer_dir = write_run_tokenizer(start, run_dir)
    device = pick_device(config.training.device)
    torch.manual_seed(config.run.seed)
    start.model.to(device)
    start.model.gradient_checkpointing = config.training.gradient_checkpointing
    return run_dir, tokenizer_dir, device


def write_run_tokenizer(start: ChatStart, run_dir: Path) -> Path:
    """The run's own tokenizer dir (tokens added, chat_template set); checkpoints copy it."""
    directory = run_dir / "tokenizer"
    start.tokenizer.save(directory, overwrite=True)
    write_chat_template(directory, start.template)
    return directory


def hf_config_for(start: ChatStart, config: Config) -> dict:
    """The HF config.json of the trained model."""
    tok = start.tokenizer
    return to_hf_config(start.arch, dropout=config.model.dropout, bos_id=tok.bos_id, eos_id=tok.eos_id,
                        pad_id=tok.pad_id)


def split_items(items: list, val_split: float, seed: int) -> tuple[list, list]:
    """Seeded random train/val split of examples or pairs (val empty when val_split is 0)."""
    train_mask, val_mask = split_documents(np.arange(len(items)), val_split, seed)
    return [x for x, keep in zip(items, train_mask, strict=True) if keep], \
        [x for x, keep in zip(items, val_mask, strict=True) if keep]


def chat_meta(start: ChatStart, config: Config) -> dict:
    """Checkpoint meta shared by chat stages."""
    return {"tokenizer_fingerprint": start.tokenizer.fingerprint, "source_checkpoint": str(start.source.path),
            "post_training": True, "chat_template": start.template.name, "preset": start.source.meta.get("preset"),
            "seq_len": config.data.seq_len}

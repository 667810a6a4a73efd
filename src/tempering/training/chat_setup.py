"""What SFT and DPO share: the starting checkpoint, the chat template, the run's tokenizer, splits.

The template's special tokens must exist in the tokenizer; a foreign tokenizer that lacks
them gets them added and the model's embeddings grow to match (said out loud). The run
keeps its own tokenizer copy with `chat_template` set, and every checkpoint carries it, so
`transformers`' `apply_chat_template` reproduces the training token ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.checkpoint.io import Checkpoint, load_checkpoint
from tempering.checkpoint.model_loading import load_checkpoint_tokenizer
from tempering.checkpoint.resolution import resolve_source_checkpoint
from tempering.config.schema import Config
from tempering.data.chat import (
    ChatTemplate,
    get_template,
    required_special_tokens,
    write_chat_template,
)
from tempering.data.packing import split_documents
from tempering.errors import UserError
from tempering.ranks import is_main_process
from tempering.tokenizer import TokenizerBundle
from tempering.tracking.console import console
from tempering.training.assembly import Assembly, ModelSource, assemble, source_from_checkpoint
from tempering.training.objective import Objective
from tempering.training.run_dir import prepare_run_dir


@dataclass
class ChatStart:
    """The loaded starting point of a chat stage (the model itself is built by the assembly)."""

    source: Checkpoint
    model_source: ModelSource
    tokenizer: TokenizerBundle  # with any tokens the template needs added
    template: ChatTemplate


def load_chat_start(config: Config, cli_checkpoint: str | None) -> ChatStart:
    """Resolve the source checkpoint, its family and architecture, its tokenizer and the template."""
    source_path, origin = resolve_source_checkpoint(config, cli_checkpoint)
    console.print(f"source checkpoint: {origin}")
    source = load_checkpoint(source_path)
    model_source = source_from_checkpoint(source, config.model)
    if "causal_lm" not in model_source.family.tasks:
        raise UserError(f"{source.path} holds an {model_source.family.name} model; chat tuning needs a decoder "
                        "checkpoint")
    tokenizer = load_checkpoint_tokenizer(source, config.tokenizer.path)
    template = get_template(config.sft.template, tokenizer.path)
    missing = [t for t in required_special_tokens(template) if tokenizer.tokenizer.token_to_id(t) is None]
    if missing:
        tokenizer = tokenizer.with_special_tokens(missing)
        console.print(f"template {template.name} needs {', '.join(missing)}, which the tokenizer lacked: added")
    context = model_source.family.context_length(model_source.arch)
    if context is not None and config.data.seq_len > context:
        raise UserError(f"data.seq_len ({config.data.seq_len}) is longer than the model's context ({context})")
    return ChatStart(source, model_source, tokenizer, template)


def assemble_chat(config: Config, start: ChatStart, objective: Objective | Callable[[nn.Module], Objective],
                  device: torch.device) -> Assembly:
    """The one assembly, with the embeddings grown to the run tokenizer's vocabulary when it gained tokens."""
    return assemble(config, start.model_source, objective, device=device, vocab_size=start.tokenizer.vocab_size)


def start_chat_run(config: Config, start: ChatStart, *, restart: bool) -> tuple[Path, Path]:
    """Open the run dir (nothing is written before this) and write its tokenizer; return both paths."""
    run_dir = prepare_run_dir(config, restart=restart)
    recover_interrupted_saves(run_dir)
    return run_dir, write_run_tokenizer(start, run_dir)


def write_run_tokenizer(start: ChatStart, run_dir: Path) -> Path:
    """The run's own tokenizer dir (tokens added, chat_template set); checkpoints copy it."""
    directory = run_dir / "tokenizer"
    if is_main_process():  # under a launcher rank 0 writes checkpoints, and so their tokenizer files
        start.tokenizer.save(directory, overwrite=True)
        write_chat_template(directory, start.template)
    return directory


def chat_checkpoint_configs(assembly: Assembly, start: ChatStart, config: Config) -> tuple[dict, dict | None]:
    """config.json and generation_config.json: generation stops at EOS and at the template's end of turn."""
    end_of_turn = start.tokenizer.tokenizer.token_to_id(start.template.end_of_turn)
    return assembly.checkpoint_configs(start.tokenizer, config, () if end_of_turn is None else (end_of_turn,))


def split_items(items: list, val_split: float, seed: int) -> tuple[list, list]:
    """Seeded random train/val split of examples or pairs (val empty when val_split is 0)."""
    train_mask, val_mask = split_documents(np.arange(len(items)), val_split, seed)
    return [x for x, keep in zip(items, train_mask, strict=True) if keep], \
        [x for x, keep in zip(items, val_mask, strict=True) if keep]


def chat_meta(start: ChatStart, config: Config, assembly: Assembly) -> dict:
    """Checkpoint meta shared by chat stages."""
    return {"tokenizer_fingerprint": start.tokenizer.fingerprint, "source_checkpoint": str(start.source.path),
            "post_training": True, "chat_template": start.template.name, "seq_len": config.data.seq_len,
            **assembly.checkpoint_meta()}

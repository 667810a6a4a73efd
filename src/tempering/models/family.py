"""What a model family declares, so the rest of Tempering trains, saves and loads it without naming its tensors.

A family (the Llama-style decoder today; MoE, encoder, vision, audio and talker later) is
one object: its architecture dataclass and presets, a builder, the Hugging Face config
translation both ways, parameter counting, the tensors a checkpoint of it holds, the
`model_type` it writes into `config.json` and `meta.json`, and where its embeddings,
blocks and head sit (for freezing and per-layer learning rates). Checkpoint validation,
source resolution, the trainable rules and the CLI ask the family; only `models/` names
a family's tensors. This module imports no torch, so `temper presets` starts fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from tempering.errors import UserError


@dataclass(frozen=True)
class SpecialTokenIds:
    """The token ids a checkpoint's `config.json` and `generation_config.json` name."""

    bos_id: int | None
    eos_ids: tuple[int, ...]  # the first is the tokenizer's EOS; chat stages add the end-of-turn token
    pad_id: int | None


@dataclass(frozen=True)
class ParameterLayout:
    """Where a family's parameters sit, by name: what freeze, unfreezing and layer-wise LR rules act on."""

    embeddings: tuple[str, ...]  # input embeddings: frozen with the first blocks, the lowest layer-wise LR
    head: tuple[str, ...]  # output head: what train_only_head trains
    final_norm: tuple[str, ...]  # trains with the head
    block_pattern: re.Pattern[str]  # matches a parameter inside block i, group 1 = i
    expert_pattern: re.Pattern[str] | None = None  # mixture of experts: matches expert j's parameters, group 1 = j
    router: str | None = None  # mixture of experts: fnmatch pattern of the routers (`--train-only router`)
    embedding_prefixes: tuple[str, ...] = ()  # input-embedding modules whose parameter names vary (a conv stem)

    def is_embedding(self, name: str) -> bool:
        """Tell whether a parameter is part of the input embeddings."""
        return name in self.embeddings or name.startswith(self.embedding_prefixes)

    def block_index(self, name: str) -> int | None:
        """The block a parameter belongs to, or None (embeddings, final norm, head)."""
        match = self.block_pattern.match(name)
        return int(match.group(1)) if match else None

    def expert_index(self, name: str) -> int | None:
        """The expert a parameter belongs to, or None (shared weights, routers, dense families)."""
        match = self.expert_pattern.match(name) if self.expert_pattern else None
        return int(match.group(1)) if match else None


class ModelFamily:
    """The contract every model family fulfils (see docs/architecture.md, "Adding a model family")."""

    name: ClassVar[str]  # registry key, written to meta.json as "family"
    hf_model_types: ClassVar[tuple[str, ...]]  # config.json model_type values this family reads
    layout: ClassVar[ParameterLayout]
    presets: ClassVar[dict[str, Any]]  # preset name -> architecture
    tasks: ClassVar[tuple[str, ...]] = ("causal_lm",)  # what pretrain/post-train can train it for; first = default

    def model_type(self, arch: Any) -> str:
        """The `model_type` a checkpoint of `arch` carries in config.json and meta.json."""
        raise NotImplementedError

    def architecture(self, preset: str, overrides: dict[str, Any]) -> Any:
        """The preset's architecture with the non-None `model.*` overrides applied, checked."""
        raise NotImplementedError

    def build(self, arch: Any, *, dropout: float = 0.0):
        """A freshly initialised model (an nn.Module with export_state_dict / load_exported_state_dict)."""
        raise NotImplementedError

    def to_hf_config(self, arch: Any, *, dropout: float, special: SpecialTokenIds) -> dict:
        """`config.json` content that transformers loads with this family's own class."""
        raise NotImplementedError

    def from_hf_config(self, config: dict, *, where: str | None = None) -> Any:
        """The architecture a `config.json` describes; UserError naming a key it cannot represent."""
        raise NotImplementedError

    def count_parameters(self, arch: Any) -> int:
        """Parameters a model of `arch` has (tied tensors once)."""
        raise NotImplementedError

    def count_active_parameters(self, arch: Any) -> int:
        """Parameters one token passes through (all of them, except in a mixture of experts)."""
        return self.count_parameters(arch)

    def count_non_embedding_parameters(self, arch: Any) -> int:
        """Parameters outside the token embedding and output head."""
        raise NotImplementedError

    def expected_tensors(self, arch: Any) -> dict[str, tuple[int, ...]]:
        """Name and shape of every tensor `export_state_dict` writes for `arch`."""
        raise NotImplementedError

    def optional_tensors(self, arch: Any) -> dict[str, tuple[int, ...]]:
        """Tensors a checkpoint may hold besides the expected ones (a tied head some exporters write)."""
        return {}

    def vocab_size(self, arch: Any) -> int | None:
        """The vocabulary the model embeds (None for families without token inputs)."""
        return getattr(arch, "vocab_size", None)

    def context_length(self, arch: Any) -> int | None:
        """The longest sequence the model accepts (None where it has no fixed limit)."""
        return getattr(arch, "max_seq_len", None)

    def default_task(self, arch: Any) -> str:
        """The task a run trains when the config says `task: auto` (a checkpoint's head may decide)."""
        return self.tasks[0]

    def import_weights(self, config: dict, weights: dict) -> dict:
        """A Hugging Face directory's tensors in this family's names (`temper import`; most need no renaming)."""
        return weights

    def with_task_head(self, arch: Any, head: str, labels: tuple[str, ...] = ()) -> Any:
        """`arch` with another task head (token classification with `labels`, masked LM); UserError if it has none."""
        raise UserError(f"the {self.name} family has no {head} head (use an encoder checkpoint or preset)")

    def adapt(self, model, arch: Any, *, dropout: float = 0.0):
        """A model of `arch` (another head, more labels) carrying over what `model` learned."""
        raise NotImplementedError(f"the {self.name} family cannot change its architecture in place")

    def resize_vocabulary(self, model, vocab_size: int, *, dropout: float = 0.0):
        """A copy of `model` with `vocab_size` token rows; new rows start at the mean of the old ones."""
        raise NotImplementedError(f"the {self.name} family cannot grow its vocabulary")

    def generation_config(self, special: SpecialTokenIds) -> dict | None:
        """`generation_config.json` content for a checkpoint (None for families that do not generate text)."""
        return None

    def summary(self, arch: Any) -> dict[str, Any]:
        """Columns describing `arch` in `temper presets` (dimension name -> value)."""
        raise NotImplementedError


@contextmanager
def reading_hf_config(kind: str, where: str | None, section: str = "config") -> Iterator[None]:
    """Turn a missing key or a mistyped value met while reading a `config.json` into one UserError naming it."""
    try:
        yield
    except KeyError as missing:
        raise UserError(f"{section} has no {missing.args[0]!r}, which a {kind} model needs", where=where) from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{section} holds a value of the wrong type ({exc})", where=where) from None


def decoder_generation_config(special: SpecialTokenIds) -> dict:
    """generation_config.json of a text decoder: stop at every end token (EOS and, after chat tuning, end of turn)."""
    eos = list(dict.fromkeys(special.eos_ids))
    return {"bos_token_id": special.bos_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
            "pad_token_id": special.pad_id}

"""Names of checkpoint files and directories, and resolving a user's path to one checkpoint.

A user may name a checkpoint directory or a whole run directory (DESIGN.md, "Run
directory"); `resolve_checkpoint` turns either into one checkpoint directory.
"""

import json
import re
from pathlib import Path
from typing import Literal

from tempering.errors import UserError

WEIGHTS_FILE = "model.safetensors"
SHARDED_DIR = "sharded"  # an FSDP run's periodic checkpoint: DCP shards of model and optimizer (checkpoint/sharded.py)
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
META_FILE = "meta.json"
TRAINER_STATE_FILE = "trainer_state.pt"
# LoRA: what peft.PeftModel.from_pretrained reads; beside the trainer state in periodic checkpoints,
# in ADAPTER_DIR of best/ and final/ (whose model.safetensors holds the merged weights).
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_DIR = "adapter"
# Copied from the tokenizer directory when present; tokenizer.json is the one that must exist.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)

PERIODIC_DIR = "checkpoints"
INFERENCE_DIR = "inference_checkpoints"  # weights, config, tokenizer only: for evaluation and serving, never resumed
BEST_DIR = "best"
FINAL_DIR = "final"
# A checkpoint being replaced is parked under this prefix (see atomic.py); readers may use it
# while the new one has not yet been renamed into place.
OLD_PREFIX = ".old-"

_STEP_DIR = re.compile(r"step-(\d+)")

Select = Literal["best", "final", "latest"]


def step_dir_name(step: int) -> str:
    """Name the periodic checkpoint directory of an optimizer step: step-00001500."""
    return f"step-{step:08d}"


def is_checkpoint_dir(path: Path) -> bool:
    """Tell whether a directory is a checkpoint itself rather than a run directory."""
    return (path / WEIGHTS_FILE).exists() or (path / META_FILE).exists()


def periodic_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """List a run's periodic checkpoints as (step, path), oldest step first."""
    folder = Path(run_dir) / PERIODIC_DIR
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _STEP_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def newest_periodic(run_dir: Path) -> Path | None:
    """Return the periodic checkpoint with the highest step number, or None."""
    found = periodic_checkpoints(run_dir)
    return found[-1][1] if found else None


def named_checkpoint(run_dir: Path, name: str) -> Path | None:
    """Return run_dir/<name> (best or final), or its parked copy while a save replaces it."""
    for candidate in (Path(run_dir) / name, Path(run_dir) / f"{OLD_PREFIX}{name}"):
        if candidate.is_dir():
            return candidate
    return None


def resolve_checkpoint(path: str | Path, select: Select = "best") -> Path:
    """Turn a checkpoint dir or a run dir into one checkpoint directory.

    For a run dir, select="best" means best/, falling back to final/, then the newest
    checkpoints/step-*; "final" means final/ only; "latest" means the checkpoint with the
    highest step among final/ and checkpoints/step-*.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise UserError(f"checkpoint {path} is a file; expected a checkpoint or run directory")
    if is_checkpoint_dir(path):
        return path
    if select == "best":
        found = named_checkpoint(path, BEST_DIR) or named_checkpoint(path, FINAL_DIR)
        found = found or newest_periodic(path)
    elif select == "final":
        found = named_checkpoint(path, FINAL_DIR)
    elif select == "latest":
        found = _latest(path)
    else:
        raise ValueError(f"unknown checkpoint selection {select!r}")
    if found is None:
        raise UserError(f"no checkpoint found in {path} ({_wanted(select)}); {_contents(path)}")
    return found


def _latest(run_dir: Path) -> Path | None:
    """Pick the highest step among final/ (step read from its meta.json) and periodic ones."""
    candidates = [(step, 0, p) for step, p in periodic_checkpoints(run_dir)]
    final = named_checkpoint(run_dir, FINAL_DIR)
    if final is not None:
        # On a tie final/ wins (rank 1); an unreadable meta.json ranks it last so that
        # loading it later reports the bad file rather than this lookup guessing.
        candidates.append((_meta_step(final), 1, final))
    return max(candidates)[2] if candidates else None


def _meta_step(checkpoint: Path) -> int:
    """Read the step from a checkpoint's meta.json, or -1 when it is missing or unreadable."""
    try:
        step = json.loads((checkpoint / META_FILE).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return -1
    return step if isinstance(step, int) else -1


def _wanted(select: Select) -> str:
    """Say which entries a selection looks for, for error messages."""
    return {
        "best": f"looked for {BEST_DIR}/, {FINAL_DIR}/ and {PERIODIC_DIR}/step-*/",
        "final": f"looked for {FINAL_DIR}/ because checkpoint select is 'final'",
        "latest": f"looked for {FINAL_DIR}/ and {PERIODIC_DIR}/step-*/",
    }[select]


def _contents(folder: Path, max_names: int = 10) -> str:
    """Describe what a directory holds, for error messages."""
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - max_names} more)" if len(names) > max_names else ""
    return "it contains: " + ", ".join(names[:max_names]) + more

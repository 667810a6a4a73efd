"""The run directory's lifecycle: start, resume, restart (moving the old run aside), summary."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tempering.config.loading import config_to_dict, diff_configs, save_resolved_config
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.tracking.console import console
from tempering.tracking.fanout import check_tracking_packages

# Keys that may change between a run and its resumption without changing its results.
RESUMABLE_KEYS = {"training.device", "training.log_steps"}
RESUMABLE_SECTIONS = ("debug.", "tracking.")  # fault injection (a test kills, then resumes without it); trackers


def prepare_run_dir(config: Config, *, restart: bool) -> Path:
    """Create or reopen `run.save_dir`; refuse to mix two different runs in one directory."""
    if config.run.save_dir is None:
        raise UserError("no run directory: give --save-dir DIR (or run.save_dir in the config)")
    check_tracking_packages(config)  # a tracker asked for but not installed fails before anything is written
    save_dir = Path(config.run.save_dir)
    if save_dir.exists() and not save_dir.is_dir():
        raise UserError(f"run.save_dir {save_dir} is a file, not a directory; choose another --save-dir")
    if restart and save_dir.exists() and any(save_dir.iterdir()):
        aside = save_dir.with_name(f"{save_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        save_dir.rename(aside)
        console.print(f"--restart: moved the previous run aside to {aside}")
    frozen = save_dir / "config.yaml"
    if frozen.exists():
        _check_same_run(frozen, config)
    elif save_dir.exists() and any(p.name != "logs" for p in save_dir.iterdir()):
        raise UserError(f"run.save_dir {save_dir} already holds files but no config.yaml, so it is not a "
                        "Tempering run; choose another --save-dir")
    try:
        save_resolved_config(config, save_dir)
    except OSError as exc:
        raise UserError(f"cannot write to run.save_dir {save_dir}: {exc.strerror}") from None
    return save_dir


def _check_same_run(frozen: Path, config: Config) -> None:
    try:
        previous = yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{frozen} is not valid YAML ({exc}); move the run dir aside or use --restart") from None
    differing = [k for k in diff_configs(previous, config_to_dict(config))
                 if k not in RESUMABLE_KEYS and not k.startswith(RESUMABLE_SECTIONS)]
    if differing:
        shown = ", ".join(f"{k} ({_lookup(previous, k)!r} → {_lookup(config_to_dict(config), k)!r})"
                          for k in differing[:5])
        more = f" and {len(differing) - 5} more" if len(differing) > 5 else ""
        raise UserError(f"{frozen.parent} holds a different run: {shown}{more}; use --restart to move it "
                        "aside and start over, or choose another --save-dir")


def _lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node

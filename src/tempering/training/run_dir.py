"""The run directory's lifecycle: start (locked for one process), resume, restart, and undoing a failed start.

A start that fails before training begins (a refused device, a resume that cannot load, a
crash in the first evaluation) must leave the save dir exactly as it was, so the next
attempt with a corrected config is not refused as "a different run". `prepare_run_dir`
therefore records what the directory held before; `abandon_unstarted_runs` (called by the
CLI on any error) removes only what this attempt added — and puts back a run that
`--restart` moved aside — unless `training_started` was called first.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tempering.checkpoint.atomic import recover_interrupted_saves
from tempering.config.loading import config_to_dict, diff_configs, save_resolved_config
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.ranks import on_main_process
from tempering.tracking.console import console
from tempering.tracking.fanout import check_tracking_packages
from tempering.tracking.run_lock import LOCK_FILE, lock_run_dir, unlock_run_dir

# Keys that may change between a run and its resumption without changing its results.
RESUMABLE_KEYS = {"training.device", "training.log_steps", "training.strategy", "training.fsdp.reshard_after_forward"}
RESUMABLE_SECTIONS = ("debug.", "tracking.", "slurm.")  # fault injection (a test kills, then resumes without it); trackers; the job's resources


@dataclass
class _Start:
    """What a run dir held before this attempt opened it."""

    save_dir: Path
    entries: set[str] | None  # names inside before; None when the directory did not exist
    created_root: Path | None  # the topmost folder this attempt created (save_dir or an ancestor)
    moved_aside: Path | None  # where --restart moved the previous run


_unstarted: dict[Path, _Start] = {}
_last_opened: Path | None = None


def prepare_run_dir(config: Config, *, restart: bool) -> Path:
    """Create or reopen `run.save_dir` and lock it for this process; refuse to mix two runs in one directory.

    Under a launcher rank 0 does it all (and repairs interrupted saves); the others get its
    answer, or its refusal.
    """
    return on_main_process(lambda: _open_run_dir(config, restart))


def _open_run_dir(config: Config, restart: bool) -> Path:
    if config.run.save_dir is None:
        raise UserError("no run directory: give --save-dir DIR (or run.save_dir in the config)")
    check_tracking_packages(config)  # a tracker asked for but not installed fails before anything is written
    save_dir = Path(config.run.save_dir)
    if save_dir.exists() and not save_dir.is_dir():
        raise UserError(f"run.save_dir {save_dir} is a file, not a directory; choose another --save-dir")
    if config.debug.enabled and config.debug.override_existing:
        _wipe_debug_run(save_dir)
    moved_aside = None
    if restart and save_dir.exists() and any(save_dir.iterdir()):
        lock_run_dir(save_dir)  # refuses while another process trains there
        unlock_run_dir(save_dir)
        moved_aside = save_dir.with_name(f"{save_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        save_dir.rename(moved_aside)
        console.print(f"--restart: moved the previous run aside to {moved_aside}")
    frozen = save_dir / "config.yaml"
    if frozen.exists():
        _check_same_run(frozen, config)
    elif save_dir.exists() and any(p.name not in ("logs", "slurm", LOCK_FILE) for p in save_dir.iterdir()):
        raise UserError(f"run.save_dir {save_dir} already holds files but no config.yaml, so it is not a "
                        "Tempering run; choose another --save-dir")
    start = _Start(save_dir, {p.name for p in save_dir.iterdir()} if save_dir.exists() else None,
                   topmost_missing(save_dir), moved_aside)
    _unstarted[save_dir.absolute()] = start
    global _last_opened
    _last_opened = save_dir
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        lock_run_dir(save_dir)
        save_resolved_config(config, save_dir)
    except OSError as exc:
        raise UserError(f"cannot write to run.save_dir {save_dir}: {exc.strerror}") from None
    recover_interrupted_saves(save_dir)
    return save_dir


def _wipe_debug_run(save_dir: Path) -> None:
    """debug.override_existing: delete a previous debug run in `save_dir`; refuse to touch anything else."""
    if not save_dir.exists() or not any(save_dir.iterdir()):
        return
    frozen = save_dir / "config.yaml"
    try:
        previous = yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        previous = {}
    if not (isinstance(previous, dict) and (previous.get("debug") or {}).get("enabled") is True):
        raise UserError(f"debug.override_existing: {save_dir} is not a debug run (its config.yaml does not say "
                        "debug.enabled: true), so it is left alone; choose another run.name or --save-dir")
    lock_run_dir(save_dir)  # refuses while another process trains there
    unlock_run_dir(save_dir)
    shutil.rmtree(save_dir)
    console.print(f"debug.override_existing: removed the previous debug run in {save_dir}")


def frozen_choice(config: Config, key: str):
    """The value an existing run in `run.save_dir` froze for `key` (an `auto` resolved at its start), if any."""
    if config.run.save_dir is None:
        return None
    frozen = Path(config.run.save_dir) / "config.yaml"
    try:
        value = _lookup(yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}, key)
    except (OSError, yaml.YAMLError, UnicodeDecodeError, AttributeError):
        return None
    return None if value == "auto" else value


def last_opened_run_dir() -> Path | None:
    """The run dir this process opened most recently, if it still exists (where a crash report belongs)."""
    return _last_opened if _last_opened is not None and _last_opened.is_dir() else None


def training_started(run_dir: Path) -> None:
    """Training has begun in `run_dir`: from now on an error keeps everything the run wrote."""
    _unstarted.pop(Path(run_dir).absolute(), None)


def abandon_unstarted_runs() -> None:
    """Undo every run dir this process opened but did not start training in (after an error)."""
    while _unstarted:
        _, start = _unstarted.popitem()
        unlock_run_dir(start.save_dir)
        if start.entries is None:
            shutil.rmtree(start.created_root or start.save_dir, ignore_errors=True)
        elif start.save_dir.is_dir():
            for entry in start.save_dir.iterdir():
                if entry.name in start.entries:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        if start.moved_aside is not None and not start.save_dir.exists():
            start.moved_aside.rename(start.save_dir)


def topmost_missing(path: Path) -> Path | None:
    """The highest folder of `path` (itself included) that does not exist yet, or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _check_same_run(frozen: Path, config: Config) -> None:
    try:
        previous = yaml.safe_load(frozen.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise UserError(f"{frozen} is not readable YAML ({reason}), so this run cannot be resumed; restore it, "
                        "or use --restart to move the run aside and start over") from None
    if not isinstance(previous, dict):
        raise UserError(f"{frozen} holds a YAML {type(previous).__name__}, not a Tempering config, so this run "
                        "cannot be resumed; restore it, or use --restart to move the run aside and start over")
    current, defaults = config_to_dict(config), config_to_dict(Config())
    differing = [k for k in diff_configs(previous, current)
                 if k not in RESUMABLE_KEYS and not k.startswith(RESUMABLE_SECTIONS)
                 and not _added_since_at_default(k, previous, current, defaults)]
    if differing:
        shown = ", ".join(f"{k} ({_lookup(previous, k)!r} → {_lookup(config_to_dict(config), k)!r})"
                          for k in differing[:5])
        more = f" and {len(differing) - 5} more" if len(differing) > 5 else ""
        raise UserError(f"{frozen.parent} holds a different run: {shown}{more}; use --restart to move it "
                        "aside and start over, or choose another --save-dir")


def _added_since_at_default(dotted: str, previous: dict, current: dict, defaults: dict) -> bool:
    """Whether `dotted` is a setting the frozen config predates (a newer Tempering added it) and this run
    leaves at its default: the run is the same, so upgrading never makes a run unresumable."""
    node = previous
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return False
        if part not in node:
            return _lookup(current, dotted) == _lookup(defaults, dotted)
        node = node[part]
    return False


def _lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node

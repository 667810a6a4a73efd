"""Where a run lives when no --save-dir is given: `paths.output_base` (or `paths.debug_base`) / `run.name`.

`run.name`, when not given, is the save dir's folder name, or — with no save dir — made from
the stage, the preset or source model, and the dataset names (`pretrain-tiny-prose`), so two
different runs do not land in the same folder by default.
"""

from __future__ import annotations

import re
from pathlib import Path

from tempering.config.schema import Config

MAX_DATASETS_IN_NAME = 3


def settle_run_location(config: Config) -> Config:
    """Fill `run.name` and, under `paths.output_base` / `paths.debug_base`, `run.save_dir`."""
    if "name" not in config.run.model_fields_set:  # not given in the file nor as an override
        if config.run.save_dir:
            # Imported here: run_dir imports the config package. A run being resumed keeps the name it
            # started with (an older Tempering named runs otherwise).
            from tempering.training.run_dir import frozen_choice

            config.run.name = frozen_choice(config, "run.name") or Path(config.run.save_dir).name
        else:
            config.run.name = default_run_name(config)
    if config.run.save_dir is None and config.stage != "prep":
        base = debug_base(config) if config.debug.enabled else config.paths.output_base
        if base is not None:
            config.run.save_dir = Path(base) / config.run.name
    return config


def debug_base(config: Config) -> Path | None:
    """Where debug runs go: `paths.debug_base`, else `paths.output_base/debug`."""
    if config.paths.debug_base is not None:
        return Path(config.paths.debug_base)
    return Path(config.paths.output_base) / "debug" if config.paths.output_base is not None else None


def default_run_name(config: Config) -> str:
    """`<stage>-<preset or source model>-<dataset names>`, file-name safe."""
    source = config.checkpoint.source_path
    model = config.model.preset
    if config.stage != "pretrain" and source and "{" not in source:  # the source model's run, not best/ or final/
        source_dir = Path(source)
        model = source_dir.parent.name if source_dir.name in ("best", "final") else source_dir.name
    names = [dataset.name or _dataset_name(dataset.path) for dataset in config.data.datasets]
    shown = names[:MAX_DATASETS_IN_NAME] + ([f"{len(names) - MAX_DATASETS_IN_NAME}more"]
                                           if len(names) > MAX_DATASETS_IN_NAME else [])
    parts = [config.stage.replace("_", "-"), model, "+".join(shown)]
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "-".join(part for part in parts if part)).strip("-_") or "run"


def _dataset_name(path) -> str:
    """A dataset's name: its folder or file name without extension."""
    candidate = Path(str(path).rstrip("/"))
    return candidate.stem if candidate.suffix else candidate.name

"""Typed config schema and YAML loading with overrides (model presets live with their family in `models/`)."""

from tempering.config.loading import dump_config, load_config, save_resolved_config
from tempering.config.schema import Config

__all__ = [
    "Config",
    "dump_config",
    "load_config",
    "save_resolved_config",
]

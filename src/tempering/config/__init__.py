"""Typed config schema, YAML loading with overrides, and model presets."""

from tempering.config.loading import dump_config, load_config, save_resolved_config
from tempering.config.presets import PRESETS, Architecture, count_parameters, get_preset
from tempering.config.schema import Config

__all__ = [
    "PRESETS",
    "Architecture",
    "Config",
    "count_parameters",
    "dump_config",
    "get_preset",
    "load_config",
    "save_resolved_config",
]

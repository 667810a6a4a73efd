"""Which checkpoint a post-train, SFT or DPO run starts from, and whether it fits the new data.

Sources, first one set wins: `--checkpoint`, the CHECKPOINT_PATH environment variable,
config `checkpoint.source_path` (placeholders filled from the config), and the
previous-run cache file every training run writes (`record_run`). A source that is set
but bad is an error naming it; resolution never falls through to a later source, so a
typo cannot quietly start from some other run.

Placeholders work in every string key of a config, not only the source path
(`fill_config_placeholders`): `{run_name}`, `{seed}`, `{stage}`, `{preset}`, any
`{section.key}`, and two that name what a run continues — `{backbone}` (the backbone's name:
`checkpoint.backbone`, else the source checkpoint's preset or model type, or in the source
path the previous run's) and `{run_id}` (`checkpoint.run_id`, else the source's or the
previous run's id; every run's id is `<run.name>-<hash of its save dir>`, stable across
resumes). Placeholder filling is hand-written because `str.format` cannot walk list indices
(`{data.datasets.0.path}`) or name the placeholder it does not know.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from string import Formatter

from pydantic import BaseModel
from rich.markup import escape
from safetensors import SafetensorError, safe_open

from tempering import json_files
from tempering.checkpoint.io import read_json_object, read_meta
from tempering.checkpoint.paths import (
    ADAPTER_WEIGHTS_FILE,
    CONFIG_FILE,
    META_FILE,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    resolve_checkpoint,
)
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.models.registry import family_of_checkpoint
from tempering.ranks import is_main_process
from tempering.tokenizer import load_tokenizer
from tempering.tracking.console import console

ENV_CHECKPOINT = "CHECKPOINT_PATH"
ENV_CACHE_DIR = "TEMPERING_CACHE_DIR"
CACHE_FILE_NAME = "last_run.json"
SOURCE_REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, META_FILE, TOKENIZER_FILES[0])

# Short names for the placeholders people write most; any `{section.key}` works too.
PLACEHOLDER_ALIASES = {"run_name": "run.name", "seed": "run.seed", "stage": "stage", "preset": "model.preset",
                       "backbone": "checkpoint.backbone", "run_id": "checkpoint.run_id"}
# Keys whose placeholders are filled elsewhere (the source path, during resolution).
FILLED_DURING_RESOLUTION = frozenset({"checkpoint.source_path"})


def resolve_source_checkpoint(config: Config, cli_checkpoint: str | None, *,
                              environ: Mapping[str, str] = os.environ) -> tuple[Path, str]:
    """Return (checkpoint dir, origin text) from the first source that is set; UserError if it is bad."""
    select = config.checkpoint.select
    if cli_checkpoint:
        return _resolve(cli_checkpoint, select, f"--checkpoint {cli_checkpoint}")
    if environ.get(ENV_CHECKPOINT):
        value = environ[ENV_CHECKPOINT]
        return _resolve(value, select, f"{ENV_CHECKPOINT}={value}")
    template = config.checkpoint.source_path
    if template:
        filled = fill_placeholders(template, config, extra=_previous_run_names(config, environ))
        shown = template if filled == template else f"{template} = {filled}"
        return _resolve(filled, select, f"checkpoint.source_path {shown}")
    cache = cache_file_path(config, environ)
    if cache.is_file():
        run = _read_cache(cache)
        return _resolve(run["save_dir"], select,
                        f"previous run {run.get('run_name')!r} at {run['save_dir']} (recorded in {cache})")
    raise UserError(
        "no source checkpoint: give --checkpoint PATH, set the CHECKPOINT_PATH environment variable, "
        f"set checkpoint.source_path in the config, or finish a training run first (it is recorded in {cache})"
    )


def fill_placeholders(template: str, config: Config, *, key: str = "checkpoint.source_path",
                      extra: Mapping[str, object] | None = None) -> str:
    """Fill `{run_name}`, `{seed}`, `{stage}`, `{preset}`, `{backbone}`, `{run_id}` and `{section.key}`.

    Values come from the config; `extra` supplies `{backbone}` / `{run_id}` (or other names)
    where the config leaves them unset. `key` names the config key in error messages.
    """
    try:
        fields = list(Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"{key} {template!r}: {exc} (write {{{{ or }}}} for a literal brace)") from exc
    parts = []
    for literal, name, spec, conversion in fields:
        parts.append(literal)
        if name is None:
            continue
        value = _placeholder_value(config, name, template, key, extra or {})
        if conversion:
            value = {"r": repr, "s": str, "a": ascii}[conversion](value)
        try:
            parts.append(format(value, spec))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{key} {template!r}: cannot format {{{name}}} as {spec!r}: {exc}") from exc
    return "".join(parts)


def fill_config_placeholders(config: Config, extra: Mapping[str, object] | None = None) -> Config:
    """The config with placeholders filled in every string key (see the module docstring); unchanged if none."""
    raw = config.model_dump(exclude_unset=True)
    changed = False

    def walk(value: object, path: str) -> object:
        nonlocal changed
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, (str, Path)) and "{" in str(value) and path not in FILLED_DURING_RESOLUTION:
            changed = True
            return fill_placeholders(str(value), config, key=path, extra=extra)
        return value

    filled = walk(raw, "")
    return Config.model_validate(filled) if changed else config


def run_id_of(config: Config, save_dir: Path | str | None = None) -> str:
    """A run's id: its name and a hash of its save dir, so it is stable across resumes and unique per directory."""
    where = str(Path(save_dir or config.run.save_dir or ".").resolve())
    return f"{config.run.name}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


def source_names(meta: Mapping[str, object]) -> dict[str, object]:
    """`{backbone}` and `{run_id}` of a source checkpoint, from its meta.json."""
    backbone = meta.get("backbone") or meta.get("preset") or meta.get("model_type")
    return {name: value for name, value in (("backbone", backbone), ("run_id", meta.get("run_id"))) if value}


def cache_file_path(config: Config, environ: Mapping[str, str] = os.environ) -> Path:
    """Return the previous-run cache file: checkpoint.cache_file, $TEMPERING_CACHE_DIR, or ~/.cache/tempering."""
    if config.checkpoint.cache_file is not None:
        return Path(config.checkpoint.cache_file).expanduser()
    return default_cache_dir(environ) / CACHE_FILE_NAME


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Tempering's cache folder: $TEMPERING_CACHE_DIR, else ~/.cache/tempering."""
    if environ.get(ENV_CACHE_DIR):
        return Path(environ[ENV_CACHE_DIR]).expanduser()
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return home / ".cache" / "tempering"


def record_run(config: Config, save_dir: Path, summary: dict,
               environ: Mapping[str, str] = os.environ) -> None:
    """Write the previous-run cache atomically (rank 0 under a launcher); a failure only warns, never fails the run."""
    if not is_main_process():
        return
    final_meta = Path(save_dir) / "final" / META_FILE
    backbone = source_names(read_meta(final_meta.parent)).get("backbone") if final_meta.is_file() else None
    record = {
        "save_dir": str(Path(save_dir).resolve()),
        "run_name": config.run.name,
        "run_id": run_id_of(config, save_dir),
        "backbone": backbone,
        "stage": config.stage,
        "final_step": summary.get("final_step"),
        "stop_reason": summary.get("stop_reason"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    file = cache_file_path(config, environ)
    try:
        _write_json_atomic(file, record)
    except OSError as exc:
        message = (f"could not record this run in {file} ({exc.strerror or exc}); "
                   f"later stages will need --checkpoint {record['save_dir']}")
        console.print(f"[yellow]warning:[/] {escape(message)}")


def validate_source_checkpoint(path: Path, *, data_fingerprints: list[tuple[str, str | None]]) -> dict:
    """Check a source checkpoint's files, config, weights and tokenizer against the new data; return its meta."""
    path = Path(path)
    if not (path / WEIGHTS_FILE).is_file() and (path / ADAPTER_WEIGHTS_FILE).is_file():
        raise UserError(f"source checkpoint {path} holds a LoRA adapter only; start from the run's final/ or best/ "
                        "(the merged weights), or give checkpoint.validate=false to merge it onto its base")
    for name in SOURCE_REQUIRED_FILES:
        if not (path / name).is_file():
            raise UserError(f"source checkpoint {path} is incomplete: {name} is missing")
    config_file = path / CONFIG_FILE
    hf_config, meta = read_json_object(config_file), read_meta(path)
    family = family_of_checkpoint(hf_config, meta, where=str(config_file))
    arch = family.from_hf_config(hf_config, where=str(config_file))
    _check_weights_match(path / WEIGHTS_FILE, family.expected_tensors(arch), family.optional_tensors(arch))
    fingerprint = meta.get("tokenizer_fingerprint") or _tokenizer_fingerprint(path)
    for dataset, data_fingerprint in data_fingerprints:
        if data_fingerprint is not None and data_fingerprint != fingerprint:
            raise UserError(
                f"dataset {dataset} was tokenized with tokenizer {data_fingerprint}, but source checkpoint "
                f"{path} uses tokenizer {fingerprint}; re-run `temper prep` with --tokenizer {path}"
            )
    return meta


def _resolve(value: str, select: str, origin: str) -> tuple[Path, str]:
    """Resolve one source's path to a checkpoint dir, naming the source when it is bad."""
    path = Path(value).expanduser()
    try:
        found = resolve_checkpoint(path, select)
    except UserError as exc:
        raise UserError(f"source checkpoint from {origin}: {exc}") from exc
    return found, origin if found == path else f"{origin} → {found}"


def _placeholder_value(config: Config, name: str, template: str, where: str, extra: Mapping[str, object]) -> object:
    """Look a placeholder up in the config (then `extra`); UserError names an unknown one."""
    value: object = config
    for key in PLACEHOLDER_ALIASES.get(name, name).split("."):
        value = _child(value, key)
        if value is _MISSING:
            break
    if value in (None, _MISSING) and extra.get(name) is not None:
        return extra[name]
    if value is _MISSING:
        known = ", ".join(f"{{{alias}}}" for alias in PLACEHOLDER_ALIASES)
        raise UserError(f"{where} {template!r}: unknown placeholder {{{name}}} "
                        f"(known: {known}, or a config key such as {{run.name}})")
    if isinstance(value, (BaseModel, list, dict)):
        raise UserError(f"{where} {template!r}: placeholder {{{name}}} is a config "
                        "section, not a value; name a key inside it")
    if value is None:
        hint = f" (set {PLACEHOLDER_ALIASES[name]})" if name in PLACEHOLDER_ALIASES else ""
        raise UserError(f"{where} {template!r}: placeholder {{{name}}} is not set in the config{hint}")
    return value


def _previous_run_names(config: Config, environ: Mapping[str, str]) -> dict[str, object]:
    """`{backbone}` and `{run_id}` of the previous run recorded in the cache, when there is a readable one."""
    cache = cache_file_path(config, environ)
    if not cache.is_file():
        return {}
    try:
        record = _read_cache(cache)
    except UserError:
        return {}
    return {name: record[name] for name in ("backbone", "run_id") if record.get(name)}


_MISSING = object()


def _child(value: object, key: str) -> object:
    """Step one key into a config section, list or dict; _MISSING when there is no such key."""
    if isinstance(value, BaseModel):
        return getattr(value, key) if key in type(value).model_fields else _MISSING
    if isinstance(value, list):
        return value[int(key)] if key.isdigit() and int(key) < len(value) else _MISSING
    if isinstance(value, dict):
        return value.get(key, _MISSING)
    return _MISSING


def _read_cache(file: Path) -> dict:
    """Read the previous-run cache; a damaged one is an error naming it."""
    no_save_dir = "previous-run cache {file} has no 'save_dir'; delete it or give --checkpoint"
    record = json_files.read_json_object(
        file, invalid="previous-run cache {file} is unreadable ({error}); delete it or give --checkpoint",
        not_object=no_save_dir)
    if not isinstance(record.get("save_dir"), str):
        raise UserError(no_save_dir.format(file=file))
    return record


def _write_json_atomic(file: Path, record: dict) -> None:
    """Write JSON to a temporary sibling, then rename it over `file`."""
    file.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, indent=2) + "\n")
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _check_weights_match(file: Path, expected: dict[str, tuple[int, ...]],
                         optional: dict[str, tuple[int, ...]]) -> None:
    """Compare model.safetensors' tensor names and shapes with what the family expects of config.json."""
    try:
        with safe_open(file, framework="pt") as weights:
            found = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"source checkpoint {file} is corrupt or truncated: {exc}") from exc
    expected = {**expected, **{name: shape for name, shape in optional.items() if name in found}}
    for names, problem in ((sorted(set(expected) - set(found)), "lacks tensor"),
                           (sorted(set(found) - set(expected)), "has unexpected tensor")):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise UserError(f"source checkpoint {file} {problem} {names[0]}{more} "
                            f"for the architecture in its {CONFIG_FILE}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise UserError(f"source checkpoint {file}: {name} has shape {list(found[name])}, "
                            f"but its {CONFIG_FILE} implies {list(shape)}")


def _tokenizer_fingerprint(checkpoint: Path) -> str:
    """Fingerprint the checkpoint's own tokenizer.json (for checkpoints whose meta lacks one)."""
    return load_tokenizer(checkpoint).fingerprint

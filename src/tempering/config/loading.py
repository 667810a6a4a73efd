"""Load a YAML config, apply dot-notation overrides, validate, and explain failures.

pydantic does the typing and coercion. What is written here is what no library does
for us: overrides into nested dicts and lists (`data.datasets.0.weight=2`), mapping
every validation error back to the YAML line or the override that caused it, and
suggesting the nearest valid key for a misspelt one.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tempering.config.run_location import settle_run_location
from tempering.config.schema import Config
from tempering.errors import UserError

KeyPath = tuple  # a key path such as ("data", "datasets", 0, "weight")


class _Source:
    """Remembers where each key of the raw config came from, for error messages."""

    def __init__(self, file: Path | None):
        self.file = file
        self.lines: dict[KeyPath, int] = {}
        self.overrides: dict[KeyPath, str] = {}

    def describe(self, loc: KeyPath, message: str = "") -> str | None:
        """Name what set `loc`: its override or file line; for a check across a section, the keys its message names."""
        if loc in self.overrides:
            return f"override {self.overrides[loc]!r}"
        named = [self._origin(key) for key in dict.fromkeys([*self.overrides, *self.lines])
                 if loc and key[:len(loc)] == loc and _names(message, key)]
        if named:
            return ", ".join(dict.fromkeys(named))
        for end in range(len(loc), 0, -1):
            prefix = tuple(loc[:end])
            if prefix in self.overrides:
                return f"override {self.overrides[prefix]!r}"
            if prefix in self.lines:
                return f"{self.file}:{self.lines[prefix]}"
        return str(self.file) if self.file else None


    def _origin(self, key: KeyPath) -> str:
        """`override 'k=v'` when an override set `key`, else its file line."""
        return f"override {self.overrides[key]!r}" if key in self.overrides else f"{self.file}:{self.lines[key]}"


def _names(message: str, key: KeyPath) -> bool:
    """Whether an error message names the dotted key (as a whole key, not part of a longer one)."""
    dotted = ".".join(map(str, key))
    return re.search(rf"(?<![\w.]){re.escape(dotted)}(?![\w.])", message) is not None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> Config:
    """Build a validated Config from an optional YAML file plus `key=value` overrides."""
    file = Path(path) if path is not None else None
    source = _Source(file)
    raw = dict(base or {})
    if file is not None:
        raw = _deep_merge(raw, _read_yaml(file, source))
    for item in overrides:
        key, value = _split_override(item)
        keys = _parse_key(key, item)
        _set_path(raw, keys, _parse_value(value), item)
        source.overrides[keys] = item
    _accept_top_level_run_name(raw, source)
    return settle_run_location(_validate(raw, source))


def _accept_top_level_run_name(raw: dict, source: _Source) -> None:
    """`run_name: X` at the top level, as one-YAML SFT/DPO frameworks write it, means `run.name: X`."""
    if "run_name" not in raw:
        return
    name = raw.pop("run_name")
    run = raw.setdefault("run", {})
    if isinstance(run, dict):
        if run.get("name") not in (None, name):
            where = source.describe(("run_name",)) or "config"
            raise UserError(f"{where}: run_name ({name!r}) and run.name ({run['name']!r}) disagree; keep one")
        run["name"] = name
        if ("run_name",) in source.lines:
            source.lines[("run", "name")] = source.lines[("run_name",)]


def _read_yaml(file: Path, source: _Source) -> dict:
    if not file.exists():
        raise UserError(f"config file not found: {file}")
    if file.is_dir():
        raise UserError(f"config path is a directory, expected a YAML file: {file}")
    try:
        text = file.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{file}: the top level must be a mapping of sections (run:, model:, data:, ...)")
    _record_lines(node, (), source, file)
    return data


def _record_lines(node: yaml.Node, prefix: KeyPath, source: _Source, file: Path) -> None:
    """Map each key path to its line, and reject duplicate keys (PyYAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise UserError(f"{file}:{key_node.start_mark.line + 1}: duplicate key {'.'.join(map(str, prefix + (key,)))}")
            seen.add(key)
            source.lines[prefix + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, prefix + (key,), source, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            source.lines[prefix + (index,)] = item.start_mark.line + 1
            _record_lines(item, prefix + (index,), source, file)


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {item!r} is not of the form key=value (for example training.learning_rate=1e-4)")
    return key.strip(), value


def _parse_key(key: str, item: str) -> KeyPath:
    parts: list[Any] = []
    for part in key.split("."):
        if not part:
            raise UserError(f"override {item!r}: empty key component in {key!r}")
        parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)


def _parse_value(text: str) -> Any:
    """Read an override value as YAML (numbers, booleans, lists, null); fall back to the text."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _set_path(raw: dict, keys: KeyPath, value: Any, item: str) -> None:
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(map(str, keys[:depth + 1]))
        if isinstance(key, int):
            if not isinstance(node, list):
                raise UserError(f"override {item!r}: {where} indexes a list, but {'.'.join(map(str, keys[:depth])) or 'the config'} is not a list")
            if key > len(node):
                raise UserError(f"override {item!r}: index {key} is past the end of a list of {len(node)} (use {len(node)} to append)")
            if key == len(node):
                node.append(None if last else {})
        elif not isinstance(node, dict):
            raise UserError(f"override {item!r}: cannot set {where}, its parent is not a mapping")
        if last:
            node[key] = value
        else:
            child = node[key] if (isinstance(node, list) or key in node) else None
            if child is None:
                child = [] if isinstance(keys[depth + 1], int) else {}
                node[key] = child
            node = child


def _validate(raw: dict, source: _Source) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        # Unknown keys first: a misspelt key often also causes a "missing" error.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        message = _describe_error(errors[0], source)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise UserError(message + more) from None


def _describe_error(error: dict, source: _Source) -> str:
    loc = tuple(error["loc"])
    key = ".".join(map(str, loc))
    where = source.describe(loc, str(error["msg"]))
    prefix = f"{where}: " if where else ""
    if error["type"] in ("model_type", "dict_type") and _model_at(loc) is not None:
        return (f"{prefix}{key} is a section, not a value: set its keys, e.g. {key}.KEY=VALUE "
                f"(`temper config schema` lists them)")
    if error["type"] == "extra_forbidden":
        suggestion = suggest_key(loc)
        hint = f" — did you mean {suggestion}?" if suggestion else ""
        return f"{prefix}unknown key {key}{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" or not key:
        return f"{prefix}{message}"
    got = error.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, dict | list) else ""
    return f"{prefix}config key {key}: {message}{shown}"


def suggest_key(loc: KeyPath) -> str | None:
    """Return the valid key closest to the unknown key at `loc`, as a dotted path."""
    parent = _model_at(loc[:-1])
    name = str(loc[-1])
    if parent is not None:
        close = difflib.get_close_matches(name, list(parent.model_fields), n=1, cutoff=0.6)
        if close:
            return ".".join(map(str, loc[:-1] + (close[0],)))
    dotted = ".".join("N" if isinstance(p, int) else str(p) for p in loc)
    close = difflib.get_close_matches(dotted, all_keys(), n=1, cutoff=0.75)
    if close:
        return close[0]
    # A known field under another section, e.g. `training.seq_len` for `data.seq_len`.
    matches = [k for k in all_keys() if k.rsplit(".", 1)[-1] == name]
    return " or ".join(matches) if 0 < len(matches) <= 3 else None


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = _section_type(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as `Section` or `list[Section]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def iter_fields(model: type[BaseModel] = Config, prefix: str = ""):
    """Yield (dotted key, field info) for every leaf key of the schema; list items use N."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _section_type(field.annotation)
        if inner is None:
            yield key, field
        elif typing.get_origin(field.annotation) is list:
            yield from iter_fields(inner, f"{key}.N.")
        else:
            yield from iter_fields(inner, f"{key}.")


def schema_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every leaf key, for `temper config schema` and the docs."""
    rows = []
    for key, field in iter_fields():
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        rows.append((key, describe_type(field.annotation), default, field.description or ""))
    return rows


def all_keys() -> list[str]:
    """Every leaf config key in dotted form."""
    return [key for key, _ in iter_fields()]


def describe_type(annotation: Any) -> str:
    """Short human name for a field's type."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return {"Path": "path", "str": "str", "int": "int", "float": "float", "bool": "bool"}.get(
            annotation.__name__, annotation.__name__)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        names = [describe_type(a) for a in args if a is not type(None)]
        optional = type(None) in args
        return " | ".join(names) + (" | null" if optional else "")
    if origin is list:
        return f"list[{describe_type(args[0])}]"
    return str(annotation)


def config_to_dict(config: Config) -> dict:
    """Plain, YAML-ready dict of a config."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    """The config as YAML text, sections in schema order."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def save_resolved_config(config: Config, save_dir: str | Path) -> Path:
    """Freeze the resolved config into `<save_dir>/config.yaml` (written atomically)."""
    target = Path(save_dir) / "config.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".config.yaml.tmp")
    tmp.write_text(dump_config(config), encoding="utf-8")
    tmp.replace(target)
    return target


def diff_configs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(diff_configs(a, b, dotted + "."))
        elif a != b:
            keys.append(dotted)
    return keys

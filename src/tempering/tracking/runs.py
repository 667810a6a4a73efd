"""`temper runs`: find run directories and say what state each is in, from their files alone.

A run directory holds `config.yaml` and `metrics.jsonl`. Its status: `running` while a live
process holds its lock (training/run_lock.py), else `finished` or `early-stopped` from
`summary.json`, `diverged` when the last attempt gave up on non-finite losses, else
`interrupted` (killed or crashed; re-running its command resumes it). Nothing here writes.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tempering.tracking.run_lock import lock_holder

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.yaml", "metrics.jsonl", "summary.json"
CHECKPOINT_DIRS = ("final", "best")
MAX_DEPTH = 4  # how far below each given folder to look for run directories


def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Run directories at or below `roots` (hidden folders and a run's own checkpoints are not searched)."""
    found: dict[Path, None] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            depth = len(Path(folder).relative_to(root).parts)
            if CONFIG_FILE in files and METRICS_FILE in files:
                found[Path(folder)] = None
                dirs.clear()  # checkpoints/, best/, ... are not runs of their own
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
    return list(found)


def describe_run(run_dir: Path) -> dict:
    """One row of `temper runs`: name, stage, model, status, step/total, best metric and step, last update."""
    config = _read_yaml(run_dir / CONFIG_FILE)
    records = _read_records(run_dir / METRICS_FILE)
    summary = _read_json(run_dir / SUMMARY_FILE)
    start = next((r for r in reversed(records) if r.get("event") == "start"), {})
    steps = [r["step"] for r in records if r.get("split") == "train" and isinstance(r.get("step"), int)]
    best_metric, best_step = _best(records, start, summary)
    return {
        "path": str(run_dir),
        "name": (config.get("run") or {}).get("name"),
        "stage": config.get("stage"),
        "model": _model(run_dir, config),
        "status": _status(run_dir, records, summary),
        "step": summary.get("final_step", steps[-1] if steps else 0),
        "total_steps": summary.get("total_steps", start.get("total_steps")),
        "best_metric": start.get("best_metric", summary.get("best_metric", "loss")),
        "best_value": best_metric,
        "best_step": best_step,
        "updated": _updated(run_dir),
    }


def _status(run_dir: Path, records: list[dict], summary: dict) -> str:
    if lock_holder(run_dir):
        return "running"
    if summary:
        return "early-stopped" if summary.get("stop_reason") == "early_stopping" else "finished"
    last_start = max((i for i, r in enumerate(records) if r.get("event") == "start"), default=-1)
    if any(r.get("event") == "diverged" for r in records[last_start + 1:]):
        return "diverged"
    return "interrupted"


def _best(records: list[dict], start: dict, summary: dict) -> tuple[float | None, int | None]:
    """The best validation value of the run's best metric, and its step."""
    if summary.get("best_step") is not None:
        return summary.get("best_value", summary.get("best_val_loss")), summary["best_step"]
    split, name, mode = start.get("best_split", "val"), start.get("best_metric", "loss"), start.get("best_metric_mode", "min")
    values = [(r[name], r["step"]) for r in records
              if r.get("split") == split and r.get("step") and isinstance(r.get(name), (int, float))]
    if not values:
        return None, None
    return (min if mode == "min" else max)(values, key=lambda pair: pair[0])


def _model(run_dir: Path, config: dict) -> str:
    """family/preset from the newest checkpoint's meta.json, else the config's preset."""
    for name in CHECKPOINT_DIRS:
        meta = _read_json(run_dir / name / "meta.json")
        if meta:
            return "/".join(str(part) for part in (meta.get("family"), meta.get("preset")) if part)
    return str((config.get("model") or {}).get("preset") or "-")


def _updated(run_dir: Path) -> str:
    newest = max((run_dir / name).stat().st_mtime for name in (METRICS_FILE, CONFIG_FILE)
                 if (run_dir / name).exists())
    return datetime.fromtimestamp(newest, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


def _read_yaml(file: Path) -> dict:
    try:
        value = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_records(file: Path) -> list[dict]:
    """metrics.jsonl's records; a line cut by a kill is skipped."""
    records = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records

"""One fan-out for every training record: metrics.jsonl always, then each configured tracker, rank 0 only.

The loop writes a record once; TensorBoard, MLflow and W&B receive exactly what metrics.jsonl
gets. A tracker that fails (server down, disk full, a bug in its package) prints one warning
and is dropped; training goes on. A tracker listed in `tracking.report_to` whose package is
missing is a UserError before the run dir is created (`check_tracking_packages`).

`<run_dir>/tracking.json` keeps this run's id and the trackers' own run ids, so a resumed run
(or one re-run after kill -9) continues the same MLflow and W&B runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import uuid
from pathlib import Path

from tempering.config.loading import config_to_dict
from tempering.config.schema import TRACKERS, Config
from tempering.errors import UserError
from tempering.json_files import write_json_atomic
from tempering.ranks import current_rank
from tempering.tracking.backend import Backend, record_scalars
from tempering.tracking.console import console
from tempering.tracking.metrics import MetricsLog, read_metrics

STATE_FILE = "tracking.json"
INSTALL_HINT = "pip install 'tempering[track]'"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class RecordFanOut:
    """Writes each record to metrics.jsonl and every live tracker; does nothing off rank 0."""

    def __init__(self, metrics: MetricsLog | None, backends: list[Backend], run_dir: Path):
        self.metrics, self.backends, self.run_dir = metrics, backends, run_dir

    def write(self, record: dict) -> None:
        """Append the record to metrics.jsonl, then send it to each tracker."""
        if self.metrics is None:  # not rank 0
            return
        self.metrics.write(record)
        if not self.backends:
            return
        step, scalars = record_scalars(record)
        for backend in list(self.backends):
            self._guarded(backend, "recording", _send, record, step, scalars)

    def backfill(self, backends: list[Backend]) -> None:
        """Send trackers the records metrics.jsonl already holds and they lack (a resumed run's past)."""
        if not backends or not self.metrics.path.is_file():
            return
        for record in read_metrics(self.metrics.path, skip_cut_lines=True):
            step, scalars = record_scalars(record)
            for backend in backends:
                if backend in self.backends:
                    self._guarded(backend, "catching up", _send, record, step, scalars)

    def close(self, *, completed: bool = False) -> None:
        """Close metrics.jsonl; end the trackers' runs (with summary.json and best meta.json when completed)."""
        if self.metrics is None:
            return
        self.metrics.close()
        artifacts = _artifacts(self.run_dir) if completed else []
        for backend in list(self.backends):
            self._guarded(backend, "closing", _close, completed, artifacts)
        self.backends = []

    def _guarded(self, backend: Backend, doing: str, action, *args) -> None:
        """Run action(backend, *args); a failure drops the backend with one warning."""
        try:
            action(backend, *args)
        except Exception as exc:  # a tracker never stops training
            self.backends.remove(backend)
            console.print(f"[yellow]warning:[/yellow] {backend.name} failed while {doing} "
                          f"({type(exc).__name__}: {_first_line(exc)}); training continues without it")


def _close(backend: Backend, completed: bool, artifacts: list[Path]) -> None:
    backend.close(completed=completed, artifacts=artifacts)


def _send(backend: Backend, record: dict, step: int, scalars: dict[str, float]) -> None:
    if record.get("event") == "recovery":  # the loop restored an earlier step and replays from there
        backend.rewind(int(record["restored_step"]))
    backend.write(step, scalars)


def check_tracking_packages(config: Config) -> None:
    """Fail before anything is written when a tracker named in report_to cannot be imported."""
    for name in config.tracking.trackers:
        try:
            importlib.import_module(PACKAGES[name])
        except ImportError as exc:
            raise UserError(f"tracking.report_to asks for {name}, but its package cannot be imported ({exc}); "
                            f"install it with {INSTALL_HINT}, or remove {name} from tracking.report_to") from None


def requested_trackers(config: Config) -> list[str]:
    """The trackers to start: those named, or with `all` every installed one (saying which are missing)."""
    names = config.tracking.trackers
    if "all" not in config.tracking.report_to:
        return names
    missing = [n for n in TRACKERS if n not in names and importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        console.print(f"tracking.report_to=all: {', '.join(missing)} not installed, skipped ({INSTALL_HINT})")
    return list(dict.fromkeys([*names, *(n for n in TRACKERS if n not in missing)]))


def open_tracking(config: Config, run_dir: Path, *, first_step: int, meta: dict,
                  rank: int | None = None) -> RecordFanOut:
    """The run's fan-out: metrics.jsonl plus the configured trackers, continuing their runs after a resume."""
    if (current_rank() if rank is None else rank) != 0:
        return RecordFanOut(None, [], run_dir)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    names = requested_trackers(config)
    if not names:
        return RecordFanOut(metrics, [], run_dir)
    state = _read_state(run_dir)
    identity = RunIdentity(config, state["run_id"], meta)
    backends = []
    for name in names:
        try:
            backend = start_backend(name, config, run_dir, identity, first_step, state.get(f"{name}_run_id"))
        except Exception as exc:
            console.print(f"[yellow]warning:[/yellow] {name} could not start ({type(exc).__name__}: "
                          f"{_first_line(exc)}); training continues without it")
            continue
        backends.append(backend)
        if backend.run_id:
            state[f"{name}_run_id"] = backend.run_id
    _write_state(run_dir, state)
    fan_out = RecordFanOut(metrics, backends, run_dir)
    fan_out.backfill([b for b in backends if b.backfills])
    console.print("tracking: metrics.jsonl + " + ", ".join(_describe(b, config, run_dir) for b in backends)
                  if backends else "tracking: metrics.jsonl only (every tracker failed to start)")
    return fan_out


class RunIdentity:
    """The names trackers show for a run: experiment, run name and tags (continued-training names too)."""

    def __init__(self, config: Config, run_id: str, meta: dict):
        self.run_id = run_id
        tracking, run_name, stage = config.tracking, config.run.name, config.stage
        self.continued = bool(meta.get("post_training"))
        if self.continued:
            model = (config.checkpoint.backbone or meta.get("backbone")
                     or source_model_name(meta.get("source_checkpoint") or "model"))
            self.experiment = f"{tracking.experiment or run_name}-continued-{model}"
            self.run_name = f"{model}_continued_{run_id}"
            self.tags = {"training_type": "continued", "source_checkpoint": str(meta.get("source_checkpoint"))}
        else:
            self.experiment = tracking.experiment or f"{run_name}-{stage}"
            self.run_name = run_name
            self.tags = {"training_type": stage}
        self.tags["tempering_run_id"] = run_id


def source_model_name(checkpoint: str) -> str:
    """A source checkpoint's model name: its run dir's name for best/, final/ and checkpoints/step-*."""
    path = Path(checkpoint)
    if path.parent.name == "checkpoints":
        path = path.parent.parent
    elif path.name in ("best", "final"):
        path = path.parent
    return path.name or "model"


def flat_params(config: Config) -> dict[str, str]:
    """The resolved config as dotted keys with string values (lists and dicts as JSON)."""
    flat: dict[str, str] = {}

    def visit(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, str) else json.dumps(node)

    visit(config_to_dict(config), "")
    return flat


def start_backend(name: str, config: Config, run_dir: Path, identity: RunIdentity, first_step: int,
                  run_id: str | None) -> Backend:
    """Start one tracker for the run (continuing its run `run_id` when given)."""
    tracking = config.tracking
    if name == "tensorboard":
        from tempering.tracking.tensorboard_backend import TensorBoardBackend

        return TensorBoardBackend(run_dir, first_step=first_step)
    if name == "mlflow":
        from tempering.tracking.mlflow_backend import MlflowBackend, default_tracking_uri

        uri = tracking.mlflow_tracking_uri or default_tracking_uri(run_dir)
        artifact_root = None if tracking.mlflow_tracking_uri else run_dir.resolve().parent / "mlartifacts"
        return MlflowBackend(tracking_uri=uri, experiment=identity.experiment, run_name=identity.run_name,
                             tags=identity.tags, params=flat_params(config), run_id=run_id,
                             artifact_root=artifact_root)
    from tempering.tracking.wandb_backend import WandbBackend

    return WandbBackend(run_dir, project=tracking.wandb_project, name=tracking.wandb_name or identity.run_name,
                        tags=tracking.wandb_tags, mode=wandb_mode(config), config=config_to_dict(config),
                        run_id=run_id)


def wandb_mode(config: Config) -> str:
    """W&B's mode: tracking.wandb_mode, but always offline when the config says `offline: true`."""
    return "offline" if config.offline else config.tracking.wandb_mode


def _describe(backend: Backend, config: Config, run_dir: Path) -> str:
    if backend.name == "tensorboard":
        return f"TensorBoard ({run_dir / 'logs'})"
    if backend.name == "mlflow":
        from tempering.tracking.mlflow_backend import default_tracking_uri

        return f"MLflow run {backend.run_id} ({config.tracking.mlflow_tracking_uri or default_tracking_uri(run_dir)})"
    return f"W&B {wandb_mode(config)} run {backend.run_id} ({run_dir / 'wandb'})"


def _read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    if path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(state, dict) and isinstance(state.get("run_id"), str):
                return state
        except json.JSONDecodeError:
            pass
        console.print(f"[yellow]warning:[/yellow] {path} is unreadable; trackers start new runs")
    return {"run_id": uuid.uuid4().hex[:8]}


def _write_state(run_dir: Path, state: dict) -> None:
    write_json_atomic(run_dir / STATE_FILE, state)


def _artifacts(run_dir: Path) -> list[Path]:
    """summary.json and the best checkpoint's meta.json (final/'s when no best/ was kept)."""
    meta = next((run_dir / kind / "meta.json" for kind in ("best", "final") if (run_dir / kind / "meta.json").is_file()),
                None)
    return [path for path in (run_dir / "summary.json", meta) if path is not None and path.is_file()]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"

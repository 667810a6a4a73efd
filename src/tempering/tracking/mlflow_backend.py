"""MLflow: one MLflow run per Tempering run, in a local sqlite store unless a tracking URI is given.

Names (which seed users rely on): the experiment is `tracking.experiment`, else
`<run.name>-<stage>`; a post-training run goes to `<experiment or run.name>-continued-<model>`
as run `<model>_continued_<run_id>` with tag `training_type: continued`, where `<model>` is the
backbone (`checkpoint.backbone`, else the one the run's meta.json records — token classification
records its encoder's) or else the source checkpoint's run name. Params are the flattened resolved config, each value cut to
MLflow's length limit. Metrics are queued and written by MLflow's background thread every
FLUSH_INTERVAL_S. The MLflow run id is persisted in the run dir (see fanout.py), so a
resumed run appends to the same MLflow run; the metrics it already holds are not sent twice.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from tempering.tracking.backend import Backend
from tempering.tracking.console import console

DEFAULT_STORE = "mlflow.db"  # beside the run dir, so the runs of one output base share a store
MAX_PARAM_VALUE_CHARS = 6000  # MLflow's server-side limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_KEY_CHARS = 250
PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
METRICS_PER_BATCH = 1000
# One log_batch into a sqlite store takes 20-130 ms on this project's (shared) CPU, a hundred times a
# whole telemetry-plus-TensorBoard log line: metrics are queued, handed to MLflow's background
# logging thread (synchronous=False) every few seconds, and awaited at the end. A kill loses at
# most that much, which the resumed run re-sends from metrics.jsonl.
FLUSH_INTERVAL_S = 10.0
# A server that is down should cost seconds, not MLflow's default minutes of retries.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
UNSAFE_KEY_CHARS = re.compile(r"[^\w./\- ]")  # MLflow rejects others (':' on Windows)


def default_tracking_uri(run_dir: Path) -> str:
    """The local sqlite store beside the run dir."""
    return f"sqlite:///{(run_dir.resolve().parent / DEFAULT_STORE).as_posix()}"


def metric_key(key: str) -> str:
    """A metric name MLflow accepts on every platform (`val:new/loss` -> `val_new/loss`)."""
    return UNSAFE_KEY_CHARS.sub("_", key)[:MAX_KEY_CHARS]


class MlflowBackend(Backend):
    """Metrics, params and end-of-run artifacts into one MLflow run."""

    name = "mlflow"
    backfills = True

    def __init__(self, *, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 params: dict[str, str], run_id: str | None, artifact_root: Path | None):
        super().__init__()
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        # Store creation logs INFO lines; the console is the run's (set after import: mlflow configures its logger then).
        for logger in ("mlflow", "alembic"):
            logging.getLogger(logger).setLevel(logging.WARNING)

        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._pending: list = []  # Metric entities not handed to MLflow yet
        self._operations: list = []  # MLflow's handles of batches its background thread is writing
        self._flushed_at = time.monotonic()
        self.run_id = self._reopen(run_id) or self._create(experiment, run_name, tags, artifact_root)
        self._log_params(params)

    def _reopen(self, run_id: str | None) -> str | None:
        """Continue the persisted run (status back to RUNNING); learn which metric steps it holds."""
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException:  # another store, or the run was deleted: start a new one
            console.print(f"MLflow run {run_id} (tracking.json) is not in this store; starting a new MLflow run")
            return None
        for key in run.data.metrics:
            self.skip_through[key] = max(m.step for m in self._client.get_metric_history(run_id, key))
        self._client.update_run(run_id, status="RUNNING")
        return run_id

    def _create(self, experiment: str, run_name: str, tags: dict[str, str], artifact_root: Path | None) -> str:
        found = self._client.get_experiment_by_name(experiment)
        location = artifact_root.resolve().as_uri() if artifact_root else None  # else the server's default
        experiment_id = found.experiment_id if found else self._client.create_experiment(
            experiment, artifact_location=location)
        return self._client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def _log_params(self, params: dict[str, str]) -> None:
        """Log the params the run lacks (MLflow params are immutable; a resume may change device, log_steps)."""
        from mlflow.entities import Param

        held = self._client.get_run(self.run_id).data.params
        fresh = [Param(key[:MAX_KEY_CHARS], value[:MAX_PARAM_VALUE_CHARS]) for key, value in params.items()
                 if key[:MAX_KEY_CHARS] not in held]
        for start in range(0, len(fresh), PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=fresh[start:start + PARAMS_PER_BATCH])

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Send the scalars under MLflow-safe names (the resume check uses those names)."""
        super().write(step, {metric_key(key): value for key, value in scalars.items()})

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Queue the scalars; send the queue every FLUSH_INTERVAL_S, at each event (checkpoints) and at the end."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(key, value, now, step) for key, value in scalars.items())
        if (time.monotonic() - self._flushed_at >= FLUSH_INTERVAL_S or len(self._pending) >= METRICS_PER_BATCH
                or any(key.startswith("events/") for key in scalars)):
            self.flush()

    def flush(self) -> None:
        """Hand the queued metrics to MLflow's background logging thread, one log_batch call per 1000."""
        while self._pending:
            batch, self._pending = self._pending[:METRICS_PER_BATCH], self._pending[METRICS_PER_BATCH:]
            self._operations.append(self._client.log_batch(self.run_id, metrics=batch, synchronous=False))
        self._flushed_at = time.monotonic()

    def wait(self) -> None:
        """Block until every batch handed over has been written (raises what a write raised)."""
        operations, self._operations = self._operations, []
        for operation in operations:
            operation.wait()

    def close(self, *, completed: bool, artifacts: list) -> None:
        """Attach the artifacts and mark the run FINISHED (or FAILED when training did not complete)."""
        self.flush()
        self.wait()
        if completed:
            for path in artifacts:
                self._client.log_artifact(self.run_id, str(path), artifact_path=Path(path).parent.name
                                          if Path(path).parent.name in ("best", "final") else None)
        self._client.set_terminated(self.run_id, status="FINISHED" if completed else "FAILED")

"""TensorBoard, MLflow and W&B through the real CLI and the real packages: what each reads back.

One run reports to all three, is killed with SIGKILL halfway through writing a checkpoint,
and is re-run: every tracker must hold exactly one value per step, one run, and the same
final validation loss as metrics.jsonl.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tempering.tracking.metrics import read_metrics
from tests.conftest import assert_user_error, run_temper
from tests.integration.conftest import TINY_RUN

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("tensorboard", "mlflow", "wandb")),
    reason="needs the track extra: pip install -e '.[track]' (CI installs it)")

KILLED_RUN = [*TINY_RUN, "--max-steps", "12", "--eval-steps", "4", "--save-steps", "4"]


@pytest.fixture(scope="module")
def killed_run(workspace, tmp_path_factory):
    """A run reporting to every tracker, SIGKILLed while saving step 8 (resumes from step 4), then re-run."""
    run = tmp_path_factory.mktemp("tracked") / "run"
    args = ["pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", run,
            *KILLED_RUN, "--report-to", "tensorboard,mlflow,wandb"]
    died = run_temper(*args, "debug.kill_during_save_at_step=8")
    assert died.returncode == -9, died.stderr
    resumed = run_temper(*args, check=True)
    assert "resuming from" in resumed.stderr and "warning" not in resumed.stderr, resumed.stderr
    assert "mlflow.store" not in died.stderr + resumed.stderr  # no INFO lines from the store
    return run


def metrics_history(run, key: str) -> list[tuple[int, float]]:
    """(step, value) of one `split/field` key as metrics.jsonl has it."""
    split, field = key.split("/")
    return [(r["step"], r[field]) for r in read_metrics(run / "metrics.jsonl") if r.get("split") == split]


def assert_matches_metrics(run, history: dict[str, list[tuple[int, float]]], *, rel: float) -> None:
    """One value per step, steps strictly increasing, values equal to metrics.jsonl's."""
    for key in ("train/loss", "val/loss", "system/rss_mb"):
        steps = [step for step, _ in history[key]]
        assert steps == sorted(set(steps)), (key, steps)
        expected = metrics_history(run, key)
        assert steps == [step for step, _ in expected], key
    final = metrics_history(run, "val/loss")[-1]
    assert history["val/loss"][-1][0] == final[0] == 12
    assert history["val/loss"][-1][1] == pytest.approx(final[1], rel=rel)
    assert [v for _, v in history["train/loss"]] == pytest.approx([v for _, v in metrics_history(run, "train/loss")],
                                                                  rel=rel)


def test_tensorboard_reads_back_metrics_after_a_kill(killed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(killed_run / "logs"))
    accumulator.Reload()
    history = {key: [(e.step, e.value) for e in accumulator.Scalars(key)]
               for key in ("train/loss", "val/loss", "system/rss_mb")}
    assert_matches_metrics(killed_run, history, rel=1e-6)  # TensorBoard stores float32
    assert accumulator.Scalars("events/checkpoint_final")[-1].step == 12


def test_mlflow_reads_back_one_run_with_params_and_artifacts(killed_run):
    from mlflow.tracking import MlflowClient

    state = json.loads((killed_run / "tracking.json").read_text())
    client = MlflowClient(f"sqlite:///{killed_run.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("run-pretrain")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [state["mlflow_run_id"]]  # the resume continued the same run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                       key=lambda m: (m.step, m.timestamp))]
               for key in ("train/loss", "val/loss", "system/rss_mb")}
    assert_matches_metrics(killed_run, history, rel=1e-12)
    assert run.data.params["training.max_steps"] == "12" and run.data.params["model.preset"] == "tiny"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"summary.json", "best"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "best")] == ["best/meta.json"]


def test_wandb_offline_run_reads_back_one_run_id(killed_run):
    from tempering.tracking.wandb_backend import read_offline_history

    state = json.loads((killed_run / "tracking.json").read_text())
    directories = sorted((killed_run / "wandb").glob("offline-run-*"))
    assert len(directories) == 2  # the killed process and the resumed one
    assert {d.name.rsplit("-", 1)[1] for d in directories} == {state["wandb_run_id"]}
    rows = read_offline_history(killed_run, state["wandb_run_id"])
    history = {key: [(row["_step"], row[key]) for row in rows if key in row]
               for key in ("train/loss", "val/loss", "system/rss_mb")}
    assert_matches_metrics(killed_run, history, rel=1e-12)


def test_telemetry_records_every_log_line(killed_run):
    system = [r for r in read_metrics(killed_run / "metrics.jsonl") if r.get("split") == "system"]
    assert [r["step"] for r in system] == list(range(1, 13))
    for record in system:
        assert set(record) >= {"rss_mb", "peak_rss_mb", "ram_used_pct", "cpu_pct", "data_wait_frac"}
        assert 10 < record["rss_mb"] <= record["peak_rss_mb"] + 1e-6
        assert 0 < record["ram_used_pct"] < 100 and 0 <= record["data_wait_frac"] <= 1 and record["cpu_pct"] >= 0


def test_post_training_shows_in_mlflow_with_continued_names(workspace, base_run, tmp_path):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "code"
    run_temper("post-train", "--checkpoint", base_run, "--new-dataset", workspace / "code_shards",
               "--save-dir", run, "--seq-len", "32", "--batch-size", "4", "--max-steps", "2",
               "training.eval_max_batches=2", "run.name=code", "--report-to", "mlflow", check=True)
    run_id = json.loads((run / "tracking.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"code-continued-{base_run.name}")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == f"{base_run.name}_continued_{run_id}"
    assert found.data.tags["training_type"] == "continued"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_new/loss")] == [12, 14]


def test_nan_recovery_keeps_one_tensorboard_value_per_step(pretrain, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    pretrain(run, "--max-steps", "6", "--save-steps", "2", "debug.inject_nan_at_step=4", "--report-to", "tensorboard")
    assert [r["event"] for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "recovery"] == ["recovery"]
    accumulator = EventAccumulator(str(run / "logs"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in accumulator.Scalars("events/recovery")] == [4]


def test_a_tracker_that_fails_warns_once_and_training_finishes(pretrain, tmp_path):
    run = tmp_path / "run"
    result = pretrain(run, "--max-steps", "3", "--report-to", "mlflow",
                      "tracking.mlflow_tracking_uri=http://127.0.0.1:9")  # nothing listens on the discard port
    assert result.stderr.count("warning:") == 1 and "mlflow could not start" in result.stderr, result.stderr
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "train"] == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["final_step"] == 3


def test_a_listed_tracker_that_is_not_installed_stops_before_the_run_dir_exists(workspace, tmp_path):
    run = tmp_path / "run"
    # The real CLI in a Python where `import wandb` fails, as on a machine without the track extra.
    hide_wandb = "import sys; sys.modules['wandb'] = None; from tempering.cli import main; main(sys.argv[1:])"
    args = ["pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", run,
            *TINY_RUN, "--max-steps", "2", "--report-to", "tensorboard,wandb"]
    result = subprocess.run([sys.executable, "-c", hide_wandb, *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "TEMPERING_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
    assert_user_error(result, "wandb", "pip install 'tempering[track]'")
    assert not run.exists()


def test_tracking_off_rank_zero_writes_nothing(tmp_path):
    from tempering.config import load_config
    from tempering.tracking.fanout import open_tracking

    config = load_config(None, ["tracking.report_to=tensorboard"])
    fan_out = open_tracking(config, tmp_path, first_step=1, meta={}, rank=1)
    fan_out.write({"step": 1, "split": "train", "loss": math.pi})
    fan_out.close(completed=True)
    assert list(tmp_path.iterdir()) == []


def test_report_to_names_only_known_trackers(tmp_path):
    result = run_temper("config", "show", "tracking.report_to=tensorboard,comet")
    assert_user_error(result, "tracking.report_to")


def test_mlflow_params_longer_than_its_limit_are_cut_not_fatal(tmp_path):
    from mlflow.tracking import MlflowClient

    from tempering.tracking.mlflow_backend import MAX_PARAM_VALUE_CHARS, MlflowBackend

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {"data.datasets": "x" * (3 * MAX_PARAM_VALUE_CHARS), "training.lr": "0.001"}
    backend = MlflowBackend(tracking_uri=uri, experiment="e", run_name="r", tags={}, params=params, run_id=None,
                            artifact_root=tmp_path / "artifacts")
    backend.write(1, {"val:new/loss": 1.5})
    backend.close(completed=True, artifacts=[])
    run = MlflowClient(uri).get_run(backend.run_id)
    assert run.data.params == {"data.datasets": "x" * MAX_PARAM_VALUE_CHARS, "training.lr": "0.001"}
    assert run.data.metrics == {"val_new/loss": 1.5} and run.info.status == "FINISHED"

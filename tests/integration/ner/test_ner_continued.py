"""Continued NER training through the CLI: where the source comes from, the strategies, val:new, MLflow names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tempering.tracking.metrics import read_metrics
from tests.conftest import run_temper
from tests.integration.ner.conftest import NER_RUN

pytest.importorskip("transformers")


def continue_ner(ner_data, save_dir, *extra, env):
    """Two steps of `post-train --task ner` on the kernel domain (which adds PRODUCT: merge)."""
    return run_temper("post-train", "--task", "ner", "--new-dataset", ner_data["kernel"]["train"], "--save-dir",
                      save_dir, "--max-steps", "2", "ner.label_mapping=merge", *NER_RUN, *extra, env=env, check=True)


def source_of(run: Path) -> str:
    return json.loads((run / "final" / "meta.json").read_text())["source_checkpoint"]


def val_splits(run: Path) -> set[str]:
    return {r["split"] for r in read_metrics(run / "metrics.jsonl") if "f1" in r}


def support(record: dict) -> dict[str, int]:
    """Entities per type in the split a validation record scores."""
    return {name: value for name, value in record.items() if name.startswith("support/")}


def test_sources_by_cli_cache_template_and_environment_with_each_strategy(ner_run, ner_data, tmp_path):
    env = {"TEMPERING_CACHE_DIR": str(tmp_path / "cache")}
    first = tmp_path / "first"
    continue_ner(ner_data, first, "--checkpoint", ner_run, "--strategy", "append", "--old-dataset",
                 ner_data["docs"]["train"], "data.validation_ratio=0.25", "data.random_seed=3", env=env)
    meta = json.loads((first / "final" / "meta.json").read_text())
    assert source_of(first) == str(ner_run / "best") and meta["strategy"] == "append"
    assert meta["backbone"] == "encoder_tiny" and val_splits(first) == {"val:new", "val:original"}
    recorded = json.loads((tmp_path / "cache" / "last_run.json").read_text())
    assert (recorded["save_dir"], recorded["backbone"]) == (str(first.resolve()), "encoder_tiny")

    # Nothing named: the previous run from the cache. No fresh split of the new data: only val:original,
    # which is `first`'s val:new rebuilt with its validation_ratio and random_seed.
    second = tmp_path / "second"
    continue_ner(ner_data, second, "data.create_new_validation=false", env=env)
    assert source_of(second) == str(first.resolve() / "best")
    assert val_splits(second) == {"val:original"}
    original = [r for r in read_metrics(second / "metrics.jsonl") if r.get("split") == "val:original"]
    first_new = [r for r in read_metrics(first / "metrics.jsonl") if r.get("split") == "val:new"]
    assert support(original[0]) == support(first_new[-1]) and sum(support(original[0]).values()) > 0

    # checkpoint.source_path with {backbone} and {run_id}, filled from the cache's previous run.
    recorded = json.loads((tmp_path / "cache" / "last_run.json").read_text())
    (tmp_path / "runs" / "encoder_tiny").mkdir(parents=True)
    (tmp_path / "runs" / "encoder_tiny" / recorded["run_id"]).symlink_to(second)
    template = f"checkpoint.source_path={tmp_path}/runs/{{backbone}}/{{run_id}}"
    third = tmp_path / "third"
    continue_ner(ner_data, third, template, "--strategy", "new_only", env=env)
    assert source_of(third) == str(tmp_path / "runs" / "encoder_tiny" / recorded["run_id"] / "best")

    # CHECKPOINT_PATH wins over the config; MLflow shows the run as {experiment}-continued-{backbone}.
    from mlflow.tracking import MlflowClient

    fourth = tmp_path / "fourth"
    continue_ner(ner_data, fourth, template, "--val-data", ner_data["kernel"]["val"], "--report-to", "mlflow",
                 "tracking.experiment=ner", env={**env, "CHECKPOINT_PATH": str(ner_run)})
    assert source_of(fourth) == str(ner_run / "best")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ner-continued-encoder_tiny")
    [found] = client.search_runs([experiment.experiment_id])
    run_id = json.loads((fourth / "tracking.json").read_text())["run_id"]
    assert found.info.run_name == f"encoder_tiny_continued_{run_id}"
    assert found.data.tags["training_type"] == "continued"
    f1 = [r["f1"] for r in read_metrics(fourth / "metrics.jsonl") if r.get("split") == "val:new"]
    assert [m.value for m in client.get_metric_history(found.info.run_id, "val_new/f1")] == pytest.approx(f1)

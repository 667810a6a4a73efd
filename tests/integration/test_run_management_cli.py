"""Run management through the real CLI: output_base + run name, debug runs, inference checkpoints, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import assert_user_error, run_temper
from tests.integration.conftest import TINY_RUN


def pretrain_in(workspace: Path, *extra, check: bool = True, config: dict | None = None, tmp: Path | None = None):
    """`temper pretrain` on the workspace shards without --save-dir, from an optional config file."""
    args = []
    if config is not None:
        file = tmp / "run.yaml"
        file.write_text(yaml.safe_dump(config))
        args = ["--config", file]
    return run_temper("pretrain", *args, "--data", workspace / "shards", "--tokenizer", workspace / "tok",
                      *TINY_RUN, "--max-steps", "2", *extra, check=check)


def test_output_base_and_run_name_place_the_run(workspace, tmp_path):
    base = tmp_path / "runs"
    pretrain_in(workspace, config={"run_name": "exp1", "paths": {"output_base": str(base)}}, tmp=tmp_path)
    assert (base / "exp1" / "final" / "model.safetensors").is_file()
    assert yaml.safe_load((base / "exp1" / "config.yaml").read_text())["run"]["name"] == "exp1"
    # Without a name: stage, preset and dataset make one.
    pretrain_in(workspace, f"paths.output_base={base}")
    assert (base / "pretrain-tiny-shards" / "final").is_dir()
    result = run_temper("config", "show", tmp_path / "run.yaml", "run.name=other")
    assert "run_name (" in result.stderr and "disagree" in result.stderr, result.stderr


def test_a_run_started_by_an_older_tempering_resumes_after_an_upgrade(workspace, tmp_path):
    """Settings added since the run started, left at their defaults, and its old name do not block a resume."""
    run = tmp_path / "run"
    pretrain_in(workspace, "--save-dir", run, "--max-steps", "4", "--save-steps", "2", "debug.kill_at_step=3",
                check=False)
    frozen = yaml.safe_load((run / "config.yaml").read_text())
    del frozen["paths"], frozen["checkpointing"], frozen["training"]["fsdp"]  # what an older version never wrote
    frozen["run"]["name"] = "run-from-before"
    (run / "config.yaml").write_text(yaml.safe_dump(frozen))
    resumed = pretrain_in(workspace, "--save-dir", run, "--max-steps", "4", "--save-steps", "2")
    assert f"resuming from {run / 'checkpoints' / 'step-00000002'} at step 2/4" in resumed.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["name"] == "run-from-before"
    # A setting the old run did have still guards it.
    changed = pretrain_in(workspace, "--save-dir", run, "--max-steps", "4", "--lr", "1e-3", check=False)
    assert_user_error(changed, f"{run} holds a different run: training.learning_rate")


def test_debug_runs_go_to_debug_base_and_only_they_can_be_overridden(workspace, tmp_path):
    base, debug = tmp_path / "runs", tmp_path / "debug"
    common = [f"paths.output_base={base}", f"paths.debug_base={debug}", "run.name=trial"]
    pretrain_in(workspace, *common, "debug.enabled=true")
    run = debug / "trial"
    assert (run / "final").is_dir() and not (base / "trial").exists()
    (run / "notes.txt").write_text("left by the first attempt")
    pretrain_in(workspace, *common, "debug.enabled=true", "debug.override_existing=true")
    assert not (run / "notes.txt").exists() and (run / "final").is_dir()
    # A non-debug run of the same name is never wiped, even when pointed at explicitly.
    pretrain_in(workspace, *common)
    kept = sorted(p.name for p in (base / "trial").iterdir())
    result = pretrain_in(workspace, *common, "debug.enabled=true", "debug.override_existing=true",
                         f"run.save_dir={base / 'trial'}", check=False)
    assert_user_error(result, "is not a debug run", str(base / "trial"))
    assert sorted(p.name for p in (base / "trial").iterdir()) == kept


def test_inference_checkpoints_load_in_transformers(workspace, tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    run = tmp_path / "run"
    pretrain_in(workspace, f"--save-dir={run}", "--max-steps", "4",
                "checkpointing.inference_checkpoint_steps=2")
    folders = sorted(p.name for p in (run / "inference_checkpoints").iterdir())
    assert folders == ["step-00000002", "step-00000004"]
    last = run / "inference_checkpoints" / "step-00000004"
    assert not (last / "trainer_state.pt").exists() and (last / "generation_config.json").is_file()
    final = load_file(run / "final" / "model.safetensors")
    for name, tensor in load_file(last / "model.safetensors").items():
        assert torch.equal(tensor, final[name]), name
    model = transformers.AutoModelForCausalLM.from_pretrained(last).eval()
    reference = transformers.AutoModelForCausalLM.from_pretrained(run / "final").eval()
    tokens = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, reference(tokens).logits, rtol=0, atol=0)
    assert json.loads((last / "meta.json").read_text())["step"] == 4

    # null or <= 0: no inference checkpoints, and no folder.
    other = tmp_path / "none"
    pretrain_in(workspace, f"--save-dir={other}", "checkpointing.inference_checkpoint_steps=0")
    assert not (other / "inference_checkpoints").exists()


def test_openmp_threads_sleep_by_default_unless_the_user_chose(tmp_path):
    probe = "import tempering, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    unset = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    chosen = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            capture_output=True, text=True, check=True)
    assert (unset.stdout.strip(), chosen.stdout.strip()) == ("PASSIVE", "ACTIVE")


def test_offline_sets_the_hub_and_wandb_switches(monkeypatch):
    from tempering.config import load_config
    from tempering.offline import OFFLINE_SWITCHES, apply_offline_switches
    from tempering.tracking.fanout import wandb_mode

    for name in OFFLINE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    apply_offline_switches(False)
    assert not any(name in os.environ for name in OFFLINE_SWITCHES)
    apply_offline_switches(True)
    assert {name: os.environ[name] for name in OFFLINE_SWITCHES} == OFFLINE_SWITCHES
    assert wandb_mode(load_config(None, ["offline=true", "tracking.wandb_mode=online"])) == "offline"
    assert wandb_mode(load_config(None, ["tracking.wandb_mode=online"])) == "online"

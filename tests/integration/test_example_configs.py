"""Every example config in configs/ resolves and trains for 2 steps, so none can rot.

The configs use the paths `make demo` writes (demo/...); here demo/ is laid out from the test
workspace (sample corpus, 512-token tokenizer, shards, a tiny pretrained run).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO_ROOT, run_temper

SHORT = ["training.max_steps=2", "training.eval_max_batches=1", "training.save_steps=null"]
STAGES = {"pretrain": "pretrain.yaml", "post-train": "post_train.yaml", "sft": "sft.yaml", "dpo": "dpo.yaml",
          "vision": "vision.yaml", "vision-post-train": "vision_post_train.yaml"}
COMMANDS = {"vision": "pretrain", "vision-post-train": "post-train"}  # config name -> the command that runs it


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    """The built-in image-caption sets, small."""
    root = tmp_path_factory.mktemp("demo_images") / "images"
    run_temper("sample-corpus", "--images", "--output", root, "--num-images", 64, check=True)
    return root


@pytest.fixture
def demo(workspace, base_run, sample_images, tmp_path):
    """tmp_path/demo arranged as the demos write it, the base model (and caption LM) being the test's tiny run."""
    demo = tmp_path / "demo"
    (demo / "shards").mkdir(parents=True)
    (demo / "runs").mkdir()
    links = {"corpus": workspace / "corpus", "tokenizer": workspace / "tok", "shards/prose": workspace / "shards",
             "shards/code": workspace / "code_shards", "runs/base": base_run, "runs/caption_lm": base_run,
             "images": sample_images}
    for name, target in links.items():
        (demo / name).symlink_to(target)
    return tmp_path


def test_every_stage_has_an_example_config():
    assert {path.name for path in (REPO_ROOT / "configs").glob("*.yaml")} >= {"prep.yaml", *STAGES.values()}


@pytest.mark.parametrize("command", list(STAGES))
def test_example_config_resolves_and_runs_two_steps(command, demo):
    config = REPO_ROOT / "configs" / STAGES[command]
    shown = run_temper("config", "show", config, check=True)
    assert "save_dir: demo/runs/" in shown.stdout
    extra = {"pretrain": ["run.save_dir=demo/runs/pretrained"],  # demo/runs/base is the shared test run
             "dpo": ["checkpoint.source_path=demo/runs/base", "data.datasets.0.limit=32", "data.val_data.0.limit=8"],
             "vision": ["model.preset=vision_tiny", "training.batch_size=8"],
             "vision-post-train": ["training.batch_size=8"]}
    if command == "vision-post-train":  # its source is the vision config's run
        run_temper("pretrain", "--config", REPO_ROOT / "configs" / STAGES["vision"], *SHORT, *extra["vision"],
                   cwd=demo, check=True)
    result = run_temper(COMMANDS.get(command, command), "--config", config, *SHORT, *extra.get(command, []),
                        cwd=demo, check=True)
    save_dir = next(line.split(": ", 1)[1] for line in shown.stdout.splitlines() if line.strip().startswith("save_dir:"))
    if command == "pretrain":
        save_dir = "demo/runs/pretrained"
    summary = json.loads((demo / save_dir / "summary.json").read_text())
    assert summary["final_step"] - summary["total_steps"] == 0, result.stderr
    assert (demo / save_dir / "final" / "model.safetensors").is_file()

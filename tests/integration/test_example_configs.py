"""Every example config in configs/ resolves and trains for 2 steps, so none can rot.

The configs use the paths `make demo` writes (demo/...); here demo/ is laid out from the test
workspace (sample corpus, 512-token tokenizer, shards, a tiny pretrained run).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO_ROOT, run_temper
from tests.speech.tones import write_tone_corpus

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


def test_speech_example_configs_run_two_steps(tmp_path):
    speech = tmp_path / "demo" / "speech"
    corpus = write_tone_corpus(speech, 20, val=4)
    for name in ("asr.csv", "new.csv"):
        shutil.copy(corpus, speech / name)
    for command, file in (("pretrain", "asr.yaml"), ("post-train", "asr_post_train.yaml")):
        run_temper(command, "--config", REPO_ROOT / "configs" / file, *SHORT, "training.batch_size=4",
                   cwd=tmp_path, check=True)
    for run in ("asr", "asr_adapted"):
        summary = json.loads((tmp_path / "demo" / "runs" / run / "summary.json").read_text())
        assert summary["best_metric"] == "wer" and summary["final_step"] == summary["total_steps"]
    meta = json.loads((tmp_path / "demo" / "runs" / "asr_adapted" / "final" / "meta.json").read_text())
    assert meta["family"] == "audio_encoder" and meta["post_training"] is True

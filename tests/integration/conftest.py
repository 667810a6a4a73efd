"""Session fixtures built through the real CLI: sample corpus → tokenizer → shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_temper


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """The sample corpus, a 512-token tokenizer, prose shards and (small) code shards."""
    root = tmp_path_factory.mktemp("pipeline")
    run_temper("sample-corpus", "--output", root / "corpus", check=True)
    run_temper("tokenizer", "train", "--input", root / "corpus" / "prose" / "train.jsonl",
               "--vocab-size", 512, "--output", root / "tok", check=True)
    run_temper("prep", "--input", root / "corpus" / "prose", "--tokenizer", root / "tok",
               "--output", root / "shards", "--val-fraction", 0.05, "--seq-len", 32, check=True)
    run_temper("prep", "--input", root / "corpus" / "code" / "val.jsonl", "--tokenizer", root / "tok",
               "--output", root / "code_shards", "--val-fraction", 0.2, "--seq-len", 32, check=True)
    return root


TINY_RUN = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3",
            "--warmup-steps", "2", "training.eval_max_batches=4", "training.log_steps=1"]


@pytest.fixture
def pretrain(workspace):
    """Run `temper pretrain` on the workspace shards with the tiny preset and extra args."""

    def run(save_dir: Path, *extra, check: bool = True, **kwargs):
        return run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok",
                          "--save-dir", save_dir, *TINY_RUN, *extra, check=check, **kwargs)

    return run


@pytest.fixture(scope="session")
def base_run(workspace, tmp_path_factory):
    """A tiny model pretrained on prose: the source of post-training, SFT and DPO runs."""
    run = tmp_path_factory.mktemp("base") / "run"
    run_temper("pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", run,
               *TINY_RUN, "--max-steps", "12", "--save-steps", "12", check=True)
    return run

"""`temper pretrain`, `eval` and `generate` end to end through the real CLI (tiny preset)."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tempering.tracking.metrics import read_metrics
from tests.conftest import assert_user_error, reached, run_temper
from tests.integration.conftest import TINY_RUN


def val_records(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "val"]


def train_losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "train"}


def test_val_perplexity_falls_and_best_holds_the_lowest_val_loss(pretrain, tmp_path):
    run = tmp_path / "run"
    pretrain(run, "--max-steps", "30", "--eval-steps", "10", "--save-steps", "10")
    vals = val_records(run)
    assert [r["step"] for r in vals] == [0, 10, 20, 30]
    assert vals[-1]["ppl"] < 0.7 * vals[0]["ppl"]
    best = json.loads((run / "best" / "meta.json").read_text())
    lowest = min(vals[1:], key=lambda r: r["loss"])
    assert best["step"] == lowest["step"] and best["val_loss"] == pytest.approx(lowest["loss"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "max_steps" and summary["final_step"] == 30
    assert summary["best_val_loss"] == pytest.approx(lowest["loss"])
    for name in ("model.safetensors", "config.json", "trainer_state.pt", "meta.json", "tokenizer.json"):
        assert (run / "final" / name).is_file()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000030"]  # keep newest 1
    state = torch.load(run / "final" / "trainer_state.pt", weights_only=True)
    assert state["train_state"]["step"] == 30
    assert (run / "config.yaml").read_text().count("max_steps: 30") == 1


def test_early_stopping_fires_on_a_plateau(pretrain, tmp_path):
    run = tmp_path / "run"
    pretrain(run, "--max-steps", "50", "--lr", "0", "--eval-steps", "2", "--early-stopping-patience", "2")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "early_stopping"
    assert summary["final_step"] == 6  # best at step 2, no improvement at 4 and 6
    events = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "early_stop"]
    assert events == [{"event": "early_stop", "step": 6, "evals_without_improvement": 2}]


def test_killed_runs_resume_bit_identically(pretrain, workspace, tmp_path):
    args = ["--max-steps", "16", "--eval-steps", "4", "--save-steps", "3", "training.save_total_limit=2"]
    reference = tmp_path / "reference"
    pretrain(reference, *args)

    run = tmp_path / "killed"
    # 1. SIGKILL in the middle of writing the step-6 checkpoint.
    died = pretrain(run, *args, "debug.kill_during_save_at_step=6", check=False)
    assert died.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".tmp-") for p in run.rglob(".tmp-*"))
    # 2. Resume, then SIGKILL at a random later step.
    kill_at = random.Random().randint(7, 11)
    command = [sys.executable, "-m", "tempering", "pretrain", "--data", str(workspace / "shards"),
               "--tokenizer", str(workspace / "tok"), "--save-dir", str(run),
               *TINY_RUN, *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if reached(lambda: max(train_losses(run) or {0: 0}) >= kill_at):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    # 3. Resume to the end.
    pretrain(run, *args)

    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert train_losses(run) == train_losses(reference)
    assert [(r["step"], r["loss"]) for r in val_records(run)] == [(r["step"], r["loss"]) for r in val_records(reference)]
    assert not list(run.rglob(".tmp-*"))


def test_nan_before_the_first_checkpoint_replays_the_run_from_its_start(pretrain, tmp_path):
    run = tmp_path / "run"
    result = pretrain(run, "--max-steps", "4", "--save-steps", "100", "debug.inject_nan_at_step=3",
                      "model.dropout=0.1")
    records = read_metrics(run / "metrics.jsonl")
    recovery = next(i for i, r in enumerate(records) if r.get("event") == "recovery")
    assert (records[recovery]["restored_step"], records[recovery]["restored_from"]) == (0, "start of run")
    first = [(r["step"], r["loss"], r["grad_norm"]) for r in records[:recovery] if r.get("split") == "train"]
    replay = [(r["step"], r["loss"], r["grad_norm"]) for r in records[recovery:] if r.get("split") == "train"]
    # Weights, optimizer state and the dropout RNG came back exactly: steps 1-2 repeat bit for bit.
    assert first == replay[:2] and [step for step, *_ in first] == [1, 2]
    assert [step for step, *_ in replay] == [1, 2, 3, 4]
    assert "recovery point" not in result.stderr  # held on disk, not in memory
    assert not list(run.rglob(".recovery-point-*"))


def test_transformers_loads_final_and_matches_logits(pretrain, tmp_path):
    transformers = pytest.importorskip("transformers")
    from tempering.checkpoint.model_loading import load_model

    run = tmp_path / "run"
    pretrain(run, "--max-steps", "3")
    ours = load_model(run / "final").model
    hf = transformers.AutoModelForCausalLM.from_pretrained(run / "final").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(run / "final")
    ids = torch.tensor([tokenizer("def main():\n    return 42")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=0)


def test_eval_and_greedy_generate(pretrain, workspace, tmp_path):
    run = tmp_path / "run"
    pretrain(run, "--max-steps", "3")
    result = run_temper("eval", "--checkpoint", run, "--data", f"prose={workspace / 'shards'}",
                        "--max-batches", "2", "--json", check=True)
    report = json.loads(result.stdout)
    assert report["checkpoint"].endswith("best") and report["step"] == 3
    prose = report["datasets"]["prose"]
    assert prose["tokens"] == 2 * 8 * 32 and 0 < prose["loss"] < 10
    assert prose["ppl"] == pytest.approx(math.exp(prose["loss"]))
    first = run_temper("generate", "--checkpoint", run, "--prompt", "The", "--temperature", "0",
                       "--max-new-tokens", "12", check=True)
    second = run_temper("generate", "--checkpoint", run, "--prompt", "The", "--temperature", "0",
                        "--max-new-tokens", "12", check=True)
    assert first.stdout.startswith("The") and first.stdout == second.stdout


def test_bad_inputs_exit_2_with_one_clear_line(pretrain, workspace, tmp_path):
    assert_user_error(pretrain(tmp_path / "a", "--max-steps", "2", "--preset", "nanoo", check=False),
                      "unknown preset 'nanoo' — did you mean nano?")
    (tmp_path / "file").write_text("not a dir")
    assert_user_error(pretrain(tmp_path / "file", "--max-steps", "2", check=False), "is a file")
    assert (tmp_path / "file").read_text() == "not a dir"
    assert_user_error(pretrain(tmp_path / "b", check=False), "no training length")
    assert_user_error(pretrain(tmp_path / "c", "--max-steps", "2", "model.vocab_size=100", check=False),
                      "model.vocab_size (100) is smaller than the tokenizer's vocabulary (512)")
    assert_user_error(pretrain(tmp_path / "d", "--max-steps", "2", "--compile", "--no-compile", check=False),
                      "give --compile or --no-compile, not both (both set training.compile)")
    assert not (tmp_path / "d").exists()

    other_tok = tmp_path / "other_tok"
    run_temper("tokenizer", "train", "--input", workspace / "corpus" / "code" / "val.jsonl",
               "--vocab-size", 400, "--output", other_tok, check=True)
    assert_user_error(pretrain(tmp_path / "d", "--max-steps", "2", "--tokenizer", other_tok, check=False),
                      "was tokenized with a different tokenizer")

    run = tmp_path / "run"
    pretrain(run, "--max-steps", "2")
    assert_user_error(pretrain(run, "--max-steps", "3", check=False), "holds a different run",
                      "training.max_steps (2 → 3)", "--restart")
    weights = run / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_user_error(run_temper("eval", "--checkpoint", run / "final", "--data", workspace / "shards"),
                      "final/model.safetensors is corrupt or truncated")


@pytest.mark.parametrize(("flags", "named"), [
    (["--temperature", "-1"], "--temperature: -1 is out of range"),
    (["--temperature", "nan"], "--temperature: nan is out of range"),
    (["--top-p", "1.5"], "--top-p: 1.5 is out of range: give 0 < P <= 1"),
    (["--top-p", "0"], "--top-p: 0 is out of range"),
    (["--top-k", "-3"], "--top-k: -3 is out of range"),
    (["--max-new-tokens", "0"], "--max-new-tokens: 0 is out of range"),
    (["--max-new-tokens", "many"], "--max-new-tokens: 'many' is not an integer"),
    (["--seed", "-5"], "--seed: -5 is out of range"),
])
def test_generate_refuses_out_of_range_sampling_settings_in_one_line(base_run, flags, named):
    before = sorted(p.relative_to(base_run) for p in base_run.rglob("*"))
    result = run_temper("generate", "--checkpoint", base_run, "--prompt", "The", *flags)
    assert_user_error(result, "temper generate: argument", named)
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout
    assert sorted(p.relative_to(base_run) for p in base_run.rglob("*")) == before


def test_disk_full_while_saving_keeps_the_previous_checkpoint(pretrain, tmp_path):
    import resource

    run = tmp_path / "run"
    pretrain(run, "--max-steps", "4", "--save-steps", "2", "training.save_total_limit=3",
             "debug.kill_during_save_at_step=4", check=False)
    before = load_file(run / "checkpoints" / "step-00000002" / "model.safetensors")

    def small_files():  # writes past 300 kB fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    failed = pretrain(run, "--max-steps", "4", "--save-steps", "2", "training.save_total_limit=3",
                      check=False, preexec_fn=small_files)
    assert_user_error(failed, "could not write checkpoint", "File too large")
    after = load_file(run / "checkpoints" / "step-00000002" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not list(run.rglob(".tmp-*"))


def test_raw_text_data_and_restart_moves_the_old_run_aside(workspace, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--data", workspace / "corpus" / "prose" / "val.jsonl", "--tokenizer", workspace / "tok",
            "--save-dir", run, *TINY_RUN, "--max-steps", "2", "--val-split", "0.2"]
    first = run_temper(*args, check=True)
    assert "tokenized" in first.stderr
    vals = val_records(run)
    assert vals and vals[0]["step"] == 0  # validation held out from the raw documents
    again = run_temper(*args, check=True)
    assert "already finished" in again.stderr
    restarted = run_temper(*args, "--restart", check=True)
    assert "moved the previous run aside" in restarted.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "final" / "model.safetensors").is_file()
    assert (run / "final" / "model.safetensors").read_bytes() == (aside[0] / "final" / "model.safetensors").read_bytes()


def test_tokenizer_defaults_to_the_one_recorded_in_the_shards(workspace, tmp_path):
    run = tmp_path / "run"
    run_temper("pretrain", "--data", workspace / "shards", "--save-dir", run, *TINY_RUN, "--max-steps", "1",
               check=True)
    fingerprint = json.loads((workspace / "tok" / "tokenizer_config.json").read_text())["tempering_fingerprint"]
    assert json.loads((run / "final" / "meta.json").read_text())["tokenizer_fingerprint"] == fingerprint


def test_a_failing_compile_falls_back_to_eager_and_the_run_finishes(pretrain, tmp_path):
    # No working C++ compiler and an empty kernel cache: Inductor cannot build the CPU kernels.
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    result = pretrain(tmp_path / "run", "--max-steps", "3", "--val-split", "0", "--compile", env=env)
    assert "warning: torch.compile failed (" in result.stderr
    assert "training continues without compiling" in result.stderr
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "train"]
    assert steps == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final_step"] == 3

"""A battery of bad inputs, one mechanism per class: nothing crashes, nothing is left behind, nothing hides.

1. A refused start leaves the save dir exactly as it was (validation before side effects; undo
   of what the attempt created).
2. Every value is range-checked in one place; an unexpected error is one line naming a
   traceback file (exit 1); environment failures (file-size limit, symlink loops) are user
   errors (exit 2).
3. Pathological data: a 50 MB one-word document goes through prep under a 4 GB address-space limit.
4. A checkpoint holding arbitrary pickled objects is refused in one line, without unsafe advice.
5. Suspicious data gets a one-line warning (and is skipped or capped).
6. Messages name the real culprit and a fix that works for that command.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, assert_user_error, run_temper
from tests.integration.conftest import TINY_RUN


def tree(path):
    """Everything under `path`: relative name -> (size, mtime), or None when `path` does not exist."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------------ 1. refused starts leave no debris

def pretrain_args(workspace, save_dir, *extra):
    return ["pretrain", "--data", workspace / "shards", "--tokenizer", workspace / "tok", "--save-dir", save_dir,
            *TINY_RUN, "--max-steps", "2", *extra]


def chat_args(command, base_run, workspace, save_dir, *extra):
    data = "chat_val" if command == "sft" else "preference_val"
    return [command, "--checkpoint", base_run, "--data", workspace / "corpus" / "chat" / f"{data}.jsonl",
            "--save-dir", save_dir, "--seq-len", "128", "--batch-size", "2", "--max-steps", "2", *extra]


REFUSALS = {
    "pretrain": {
        "device not available": ["--device", "cuda"],
        "precision the device cannot do": ["--precision", "fp16"],
        "freeze pattern matching nothing": ["training.freeze=[model.layerz.*]"],
        "unfreezing without top blocks": ["training.unfreeze_every_steps=2"],
        "negative seed": ["--seed", "-5"],
        "context too short": ["--seq-len", "300"],
        "early stopping without validation": ["--val-split", "0", "--early-stopping-patience", "2"],
    },
    "post-train": {
        "device not available": ["--device", "cuda"],
        "freeze pattern matching nothing": ["training.freeze=[nothing]"],
        "optimizer state that does not fit frozen groups": ["training.freeze=[model.layers.0.*]"],
        "strategy needing old data": ["--strategy", "combined"],
        "architecture key disagreeing": ["model.d_model=128"],
    },
    "sft": {
        "precision the device cannot do": ["--precision", "fp16"],
        "unknown template": ["--template", "chatmll"],
        "freeze pattern matching nothing": ["training.freeze=[nothing]"],
    },
    "dpo": {
        "device not available": ["--device", "cuda"],
        "reference checkpoint that does not fit": ["--ref-checkpoint", "REF"],
        "beta out of range": ["--beta", "0"],
    },
}


def refusal_command(command, reason, extra, workspace, base_run, save_dir, tmp_path):
    if command == "pretrain":
        args = pretrain_args(workspace, save_dir, *extra)
        if reason == "early stopping without validation":  # raw text: no val split of its own
            args[2] = workspace / "corpus" / "prose" / "val.jsonl"
        return args
    if command == "post-train":
        return ["post-train", "--checkpoint", base_run, "--new-dataset", workspace / "code_shards", "--save-dir",
                save_dir, "--seq-len", "32", "--max-steps", "2", *extra]
    if "REF" in extra:  # a reference with another vocabulary: a model pretrained with another tokenizer
        other = tmp_path / "other_ref"
        run_temper("tokenizer", "train", "--input", workspace / "corpus" / "code" / "val.jsonl", "--vocab-size", 400,
                   "--output", tmp_path / "other_tok", check=True)
        run_temper("pretrain", "--data", workspace / "corpus" / "code" / "val.jsonl", "--tokenizer",
                   tmp_path / "other_tok", "--save-dir", other, *TINY_RUN, "--max-steps", "1", check=True)
        extra = [other if part == "REF" else part for part in extra]
    return chat_args(command, base_run, workspace, save_dir, *extra)


@pytest.mark.parametrize(("command", "reason"), [(c, r) for c, reasons in REFUSALS.items() for r in reasons])
def test_a_refused_start_leaves_no_save_dir_behind(command, reason, workspace, base_run, tmp_path):
    save_dir = tmp_path / "new" / "run"
    result = run_temper(*refusal_command(command, reason, REFUSALS[command][reason], workspace, base_run,
                                         save_dir, tmp_path))
    assert result.returncode == 2, (reason, result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists(), (reason, tree(tmp_path / "new"))


@pytest.mark.parametrize("command", list(REFUSALS))
def test_a_refused_start_leaves_an_existing_run_exactly_as_it_was(command, workspace, base_run, tmp_path):
    save_dir = tmp_path / "run"
    if command == "pretrain":
        run_temper(*pretrain_args(workspace, save_dir), check=True)
    else:
        shutil.copytree(base_run, save_dir)  # any existing run dir; the refusal happens before it is looked at
    before = tree(save_dir)
    reason = next(iter(REFUSALS[command]))
    result = run_temper(*refusal_command(command, reason, REFUSALS[command][reason], workspace, base_run,
                                         save_dir, tmp_path))
    assert result.returncode == 2 and tree(save_dir) == before


def test_a_start_that_fails_after_opening_the_run_dir_removes_only_what_it_added(tmp_path):
    from tempering.config import load_config
    from tempering.training.run_dir import abandon_unstarted_runs, prepare_run_dir, training_started

    fresh = tmp_path / "a" / "b"
    prepare_run_dir(load_config(None, [f"run.save_dir={fresh}"]), restart=False)
    (fresh / "metrics.jsonl").write_text("{}\n")
    abandon_unstarted_runs()
    assert not (tmp_path / "a").exists()

    existing = tmp_path / "existing"
    prepare_run_dir(load_config(None, [f"run.save_dir={existing}"]), restart=False)
    training_started(existing)
    (existing / "mine.txt").write_text("keep")
    before = tree(existing)
    prepare_run_dir(load_config(None, [f"run.save_dir={existing}"]), restart=True)  # moves it aside
    (existing / "tokenizer").mkdir()
    abandon_unstarted_runs()
    assert tree(existing) == before and not list(tmp_path.glob("existing.old-*"))  # put back


# ------------------------------------------------------------------ 2. range checks, last resort, environment

@pytest.mark.parametrize(("args", "named"), [
    (["--seed", "-5"], "run.seed"),
    (["--seed", "99999999999999999999999"], "run.seed"),
    (["--lr", "-1"], "training.learning_rate"),
    (["--batch-size", "0"], "training.batch_size"),
    (["--val-split", "1.5"], "data.val_split"),
])
def test_out_of_range_training_values_are_one_line(args, named, workspace, tmp_path):
    result = run_temper(*pretrain_args(workspace, tmp_path / "run", *args))
    assert_user_error(result, named)
    one_line(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("args", "named"), [
    (["eval", "--checkpoint", "CKPT", "--data", "DATA", "--batch-size", "0"], "--batch-size: 0 is out of range"),
    (["eval", "--checkpoint", "CKPT", "--data", "DATA", "--max-batches", "-1"], "--max-batches: -1 is out of range"),
    (["inspect-data", "--checkpoint", "CKPT", "--data", "DATA", "--num-samples", "-1"], "--num-samples: -1"),
    (["tokenizer", "train", "--input", "DATA", "--output", "OUT", "--vocab-size", "-3"], "--vocab-size: -3"),
    (["sample-corpus", "--output", "OUT", "--val-fraction", "2"], "--val-fraction: 2 is out of range"),
])
def test_out_of_range_command_values_are_one_line(args, named, base_run, workspace, tmp_path):
    values = {"CKPT": base_run, "DATA": workspace / "corpus" / "prose" / "val.jsonl", "OUT": tmp_path / "out"}
    result = run_temper(*[values.get(part, part) for part in args])
    assert_user_error(result, named)
    one_line(result)
    assert not (tmp_path / "out").exists()


def test_an_unexpected_error_is_one_line_naming_the_traceback_file(monkeypatch, capsys):
    from tempering import cli

    def broken(args):
        return 1 / 0

    monkeypatch.setattr(cli, "cmd_presets", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["presets"])
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith("error: unexpected ZeroDivisionError: division by zero")
    report = Path(line.rsplit(" ", 1)[-1]).read_text()
    assert "Traceback" in report and "1 / 0" in report


def test_a_symlink_loop_in_an_input_folder_is_named(workspace, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(workspace / "corpus" / "prose" / "val.jsonl", folder)
    (folder / "a.txt").symlink_to("b.txt")
    (folder / "b.txt").symlink_to("a.txt")
    (folder / "self").symlink_to(folder)
    result = run_temper("prep", "--input", folder, "--tokenizer", workspace / "tok", "--output", tmp_path / "out")
    assert_user_error(result, "a.txt", "symbolic link")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", [b"- just\n- a list\n", b"\xff\xfe not utf-8 \x80"])
def test_resuming_a_run_whose_config_yaml_was_damaged_is_one_line(damage, workspace, tmp_path):
    run = tmp_path / "run"
    run_temper(*pretrain_args(workspace, run), check=True)
    (run / "config.yaml").write_bytes(damage)
    before = tree(run)
    result = run_temper(*pretrain_args(workspace, run, "--max-steps", "3"))
    assert_user_error(result, "config.yaml", "--restart")
    one_line(result)
    assert tree(run) == before


def test_a_tokenizer_output_below_a_file_fails_before_training(workspace, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = run_temper("tokenizer", "train", "--input", workspace / "corpus" / "prose" / "val.jsonl",
                        "--vocab-size", 400, "--output", tmp_path / "file" / "tok")
    assert_user_error(result, "is a file, not a directory")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_sft_refuses_a_checkpoint_whose_weights_do_not_match_its_config(workspace, base_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(base_run / "final", broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": 256}))
    result = run_temper(*chat_args("sft", broken, workspace, tmp_path / "run"))
    assert_user_error(result, "weights do not match config.json")
    assert not (tmp_path / "run").exists()


def test_a_file_size_limit_hit_while_writing_is_a_user_error(workspace, tmp_path):
    limit = 64 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_temper("prep", "--input", workspace / "corpus" / "prose" / "train.jsonl", "--tokenizer",
                        workspace / "tok", "--output", tmp_path / "out", preexec_fn=small_files)
    assert_user_error(result, "File too large", "ulimit -f")
    one_line(result)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 3. pathological data

@pytest.mark.slow
def test_prep_handles_a_50mb_one_word_line_under_a_4gb_address_space_limit(workspace, tmp_path):
    huge = tmp_path / "huge.jsonl"
    with open(huge, "w") as file:
        file.write(json.dumps({"text": "x" * 50_000_000}) + "\n")
        file.write(json.dumps({"text": "An ordinary document."}) + "\n")

    def four_gigabytes():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    result = run_temper("prep", "--input", huge, "--tokenizer", workspace / "tok", "--output", tmp_path / "out",
                        preexec_fn=four_gigabytes, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "1 document(s) longer than 100,000 characters were tokenized in pieces" in result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cleaning"]["documents_encoded_in_pieces"] == 1
    assert manifest["splits"]["train"]["num_documents"] == 2


def test_long_documents_cut_before_whitespace_tokenize_exactly_as_whole(workspace):
    from tempering.tokenizer import load_tokenizer
    from tempering.tokenizer.bounded import encode_bounded, split_long_text

    text = " ".join((workspace / "corpus" / "prose" / "val.jsonl").read_text().split())[:50_000]
    tokenizer = load_tokenizer(workspace / "tok").tokenizer
    pieces = split_long_text(text, max_chars=1000)
    assert len(pieces) > 50 and "".join(pieces) == text and all(len(p) <= 1000 for p in pieces)
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    assert encode_bounded(tokenizer, [text], max_chars=1000) == ([whole], 1)


# ------------------------------------------------------------------ 4. unsafe pickles

def test_a_trainer_state_holding_arbitrary_objects_is_refused_in_one_line(workspace, base_run, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(base_run / "final", source)
    state = torch.load(source / "trainer_state.pt", weights_only=True)
    state["extra"] = argparse.Namespace(a=1)  # any class a checkpoint never holds
    torch.save(state, source / "trainer_state.pt")
    result = run_temper("post-train", "--checkpoint", source, "--new-dataset", workspace / "code_shards",
                        "--save-dir", tmp_path / "run", "--seq-len", "32", "--max-steps", "2")
    line = result.stderr.strip().splitlines()[-1]  # after the lines naming the source checkpoint
    assert_user_error(result, "trainer_state.pt holds Python objects (argparse.Namespace)", "refused for safety")
    assert line.startswith("error: ")
    assert "weights_only" not in line and not (tmp_path / "run").exists()


def test_no_text_in_the_repository_recommends_disabling_the_safety_check():
    unsafe = "weights_only=" + "False"
    offenders = [str(path.relative_to(REPO_ROOT)) for pattern in ("src/**/*.py", "tests/**/*.py", "*.md", "docs/*.md",
                                                                   "benchmarks/**/*.py")
                 for path in REPO_ROOT.glob(pattern) if unsafe in path.read_text(encoding="utf-8", errors="replace")]
    assert offenders == []


# ------------------------------------------------------------------ 5. suspicious data

def test_warmup_longer_than_the_run_is_warned(workspace, tmp_path):
    result = run_temper(*pretrain_args(workspace, tmp_path / "run", "--warmup-steps", "50"), check=True)
    assert "warning: training.warmup_steps (50) is longer than the run's 2 steps" in result.stderr


def test_unanswered_conversations_and_identical_pairs_are_counted_and_skipped(workspace, base_run, tmp_path):
    chats = tmp_path / "chats.jsonl"
    answered = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                              {"role": "assistant", "content": f"Answer {i}."}]} for i in range(6)]
    cut_off = [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
                             {"role": "user", "content": f"and then {i}?"}]} for i in range(2)]
    chats.write_text("".join(json.dumps(row) + "\n" for row in answered + cut_off))
    result = run_temper("sft", "--checkpoint", base_run, "--data", chats, "--save-dir", tmp_path / "sft",
                        "--seq-len", "64", "--batch-size", "2", "--max-steps", "1", "--val-split", "0", check=True)
    assert "warning: 2 conversation(s) do not end with an assistant turn" in result.stderr

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    rows += [{"prompt": "Same?", "chosen": "yes", "rejected": "yes"}]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_temper("dpo", "--checkpoint", base_run, "--data", pairs, "--save-dir", tmp_path / "dpo",
                        "--seq-len", "64", "--batch-size", "2", "--max-steps", "1", "--val-split", "0", check=True)
    assert "warning: 1 preference pair(s) have the same chosen and rejected response" in result.stderr


def test_generate_warns_about_an_empty_prompt_and_a_length_past_the_context(base_run):
    empty = run_temper("generate", "--checkpoint", base_run, "--prompt", "", "--max-new-tokens", "3",
                       "--temperature", "0", check=True)
    assert "warning: the prompt is empty" in empty.stderr
    long = run_temper("generate", "--checkpoint", base_run, "--prompt", "The", "--max-new-tokens", "100000",
                      "--temperature", "0", check=True)
    assert "warning: --max-new-tokens 100000 runs past the model's context of 256 tokens" in long.stderr


@pytest.mark.parametrize(("spec", "message"), [
    ("=DATA", "the dataset name before '=' is empty"),
    ("prose=", "the path after '=' is empty"),
])
def test_eval_refuses_empty_names_and_paths(spec, message, base_run, workspace):
    result = run_temper("eval", "--checkpoint", base_run, "--data", spec.replace("DATA", str(workspace / "shards")))
    assert_user_error(result, message)


# ------------------------------------------------------------------ 6. messages name the real culprit

def test_config_errors_name_the_keys_at_fault_not_another_override(workspace, tmp_path):
    result = run_temper(*pretrain_args(workspace, tmp_path / "run", "--lr", "1e-3", "training.effective_batch_size=9",
                                       "--batch-size", "4"))
    line = one_line(result)
    assert "override 'training.effective_batch_size=9'" in line and "learning_rate" not in line
    assert "training.batch_size=4" in line
    section = run_temper(*pretrain_args(workspace, tmp_path / "run", "training=5"))
    assert_user_error(section, "override 'training=5': training is a section, not a value")
    assert "max_steps" not in one_line(section)


def test_a_checkpoint_without_a_tokenizer_says_so(workspace, base_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(base_run / "final", bare)
    (bare / "tokenizer.json").unlink()
    result = run_temper(*chat_args("sft", bare, workspace, tmp_path / "run"))
    assert_user_error(result, f"checkpoint {bare} has no tokenizer.json", "--tokenizer DIR")
    assert " . " not in result.stderr


def test_chat_generation_on_a_base_checkpoint_suggests_what_generate_accepts(base_run):
    result = run_temper("generate", "--checkpoint", base_run, "--chat", "Hi")
    assert_user_error(result, "has no chat template (it was not chat-tuned)", "--prompt", "temper sft")
    assert "sft.template" not in result.stderr


# ------------------------------------------------------------------ a scheduler's stop signal

def test_sigterm_checkpoints_exits_75_and_the_same_command_resumes(workspace, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tempering.tracking.metrics import read_metrics
    from tests.conftest import TEST_CACHE_DIR, reached

    run = tmp_path / "run"
    args = pretrain_args(workspace, run, "--max-steps", "120", "--eval-steps", "1000")
    process = subprocess.Popen([sys.executable, "-m", "tempering", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TEMPERING_CACHE_DIR": str(TEST_CACHE_DIR)})
    deadline = time.time() + 120
    while time.time() < deadline and not reached(lambda: '"split":"train"' in (run / "metrics.jsonl").read_text()):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    event = next(r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "preempted")
    assert event["signal"] == "SIGTERM" and event["step"] < 120
    saved = run / "checkpoints" / f"step-{event['step']:08d}"
    assert (saved / "trainer_state.pt").is_file()
    assert stderr.strip().splitlines()[-1].startswith(f"stopped by SIGTERM at step {event['step']}")
    resumed = run_temper(*args, check=True)
    assert f"resuming from {saved} at step {event['step']}/120" in resumed.stderr
    assert json.loads((run / "summary.json").read_text())["final_step"] == 120


def test_a_stop_asked_for_during_evaluation_abandons_it_and_checkpoints(workspace, tmp_path):
    from tempering.tracking.metrics import read_metrics

    run, stop_file = tmp_path / "run", tmp_path / "stop"
    stop_file.touch()  # already there at step 1, whose evaluation comes before the step-boundary check
    args = pretrain_args(workspace, run, "--max-steps", "6", "--eval-steps", "1", "training.save_steps=100")
    stopped = run_temper(*args, env={"TEMPERING_STOP_FILE": str(stop_file)})
    assert stopped.returncode == 75, stopped.stderr
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r.get("event") == "eval_interrupted"] == [1]
    assert not [r for r in records if r.get("split") == "val" and r["step"] == 1]  # no half-split result
    assert (run / "checkpoints" / "step-00000001" / "trainer_state.pt").is_file()
    assert "step 1: evaluation interrupted by a signal; checkpointing" in stopped.stderr
    stop_file.unlink()
    resumed = run_temper(*args, env={"TEMPERING_STOP_FILE": str(stop_file)}, check=True)
    assert "at step 1/6" in resumed.stderr
    assert json.loads((run / "summary.json").read_text())["final_step"] == 6

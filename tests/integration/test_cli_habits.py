"""What users type in their first ten minutes: underscore flags, misspellings, bare `temper`, plain-log ETA, `temper runs`."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tempering.argparsing import leaf_parsers
from tempering.cli import build_parser
from tests.conftest import TEST_CACHE_DIR, assert_user_error, reached, run_temper
from tests.integration.conftest import TINY_RUN


def sample_value(action: argparse.Action) -> list[str]:
    """A value the option accepts that is not its default (none for a switch)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(choice for choice in action.choices if choice != action.default))]
    for text in ("1", "0.25", "0"):  # an int, a float, a path or a name alike
        try:
            value = action.type(text) if callable(action.type) else text
        except (ValueError, argparse.ArgumentTypeError):
            continue
        if value != action.default:
            return [text]
    raise AssertionError(f"no sample value for {action.option_strings}")


def long_options():
    """(parser, dashed option, its action) for every long option with a dash, of every command."""
    for leaf in leaf_parsers(build_parser()):
        for action in leaf._actions:
            for option in action.option_strings:
                if option.startswith("--") and "-" in option[2:]:
                    yield leaf, option, action


@pytest.mark.parametrize(("leaf", "option", "action"), list(long_options()),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_long_flag_accepts_its_underscore_spelling(leaf, option, action):
    required = [part for other in leaf._actions if other.required and other.option_strings and other is not action
                for part in (other.option_strings[0], *sample_value(other))]
    positionals = ["x" for other in leaf._actions if not other.option_strings and other.nargs in (None, "+")]
    underscored = "--" + option[2:].replace("-", "_")
    parsed, extra = leaf.parse_known_args([*required, underscored, *sample_value(action), *positionals])
    assert not extra and getattr(parsed, action.dest) not in (None, False, action.default)
    # Accepted, not listed twice: not among the options help prints, nor in the usage line.
    assert all(underscored not in other.option_strings for other in leaf._actions)
    assert underscored not in leaf.format_usage()


def test_a_misspelt_flag_names_the_nearest_one():
    for typed, meant in (("--batch-szie", "--batch-size"), ("--max_stpes", "--max-steps"),
                         ("--learnig_rate", "--learning-rate")):
        result = run_temper("pretrain", typed, "4")
        assert_user_error(result, f"unknown flag {typed}; did you mean {meant}?")
        assert len(result.stderr.strip().splitlines()) == 1
    assert_user_error(run_temper("generate", "--temprature", "0"), "did you mean --temperature?")


def test_the_spellings_other_training_scripts_use_set_the_same_keys(tmp_path):
    typed = ["--batch_size", "2", "--learning_rate", "1e-3", "--warmup_steps", "3", "--max_steps", "5", "--save_dir",
             str(tmp_path), "--val_split", "0.2", "--early_stopping_patience", "2", "--grad_accum", "2", "--wd", "0"]
    parsed = build_parser().parse_args(["pretrain", *typed])
    from tempering.cli import TRAINING_FLAGS, _overrides_from

    assert _overrides_from(parsed, TRAINING_FLAGS) == [
        f"run.save_dir={tmp_path}", "data.val_split=0.2", "training.max_steps=5", "training.batch_size=2",
        "training.grad_accum=2", "training.learning_rate=0.001", "training.weight_decay=0.0",
        "training.warmup_steps=3", "training.early_stopping_patience=2"]
    post = build_parser().parse_args(["post-train", "--new_dataset", "new/", "--reset_optimizer", "--reset_scheduler",
                                      "--reset_step", "--val_data", "val/"])
    assert (post.new_dataset, post.reset_optimizer, post.reset_scheduler, post.reset_step, post.val_data) == (
        ["new/"], True, True, True, ["val/"])


def test_bare_temper_lists_the_commands_and_help_command_is_command_help():
    result = run_temper(check=True)
    for command in ("pretrain", "post-train", "sft", "dpo", "prep", "tokenizer train", "eval", "generate", "runs",
                    "import", "config show"):
        assert f"temper {command} " in result.stdout, command
    assert run_temper("help", "prep", check=True).stdout == run_temper("prep", "--help", check=True).stdout


def test_plain_logs_carry_elapsed_time_and_eta(pretrain, tmp_path):
    result = pretrain(tmp_path / "run", "--max-steps", "4")
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ") and "tok/s" in line]
    assert len(lines) == 4
    assert all(re.fullmatch(r"step \d/4  loss \d+\.\d{4}  lr \S+  [\d,]+ tok/s  elapsed \d+:\d\d  eta \d+:\d\d", line)
               for line in lines), lines


def runs_json(*dirs) -> dict[str, dict]:
    rows = json.loads(run_temper("runs", *dirs, "--json", check=True).stdout)
    return {row["path"].rsplit("/", 1)[-1]: row for row in rows}


def test_temper_runs_reports_each_status(pretrain, workspace, tmp_path):
    pretrain(tmp_path / "finished", "--max-steps", "3")
    pretrain(tmp_path / "plateau", "--max-steps", "50", "--lr", "0", "--eval-steps", "2", "--early-stopping-patience", "2")
    assert pretrain(tmp_path / "killed", "--max-steps", "6", "--save-steps", "3",
                    "debug.kill_during_save_at_step=3", check=False).returncode == -signal.SIGKILL
    diverged = pretrain(tmp_path / "diverged", "--max-steps", "5", "debug.inject_nan_at_step=2",
                        "training.max_recoveries=0", check=False)
    assert_user_error(diverged, "non-finite loss")

    command = [sys.executable, "-m", "tempering", "pretrain", "--data", str(workspace / "shards"), "--tokenizer",
               str(workspace / "tok"), "--save-dir", str(tmp_path / "live"), *TINY_RUN, "--max-steps", "100000"]
    live = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, "TEMPERING_CACHE_DIR": str(TEST_CACHE_DIR)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not reached(lambda: '"split":"train"' in (tmp_path / "live" / "metrics.jsonl").read_text()):
            time.sleep(0.1)
        before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()
                  and "live" not in path.parts}
        rows = runs_json(tmp_path)
        after = {path: path.stat().st_mtime_ns for path in before}
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait(timeout=60)
    assert before == after  # temper runs only reads
    assert {name: row["status"] for name, row in rows.items()} == {
        "finished": "finished", "plateau": "early-stopped", "killed": "interrupted", "diverged": "diverged",
        "live": "running"}
    assert (rows["finished"]["step"], rows["finished"]["total_steps"], rows["finished"]["best_step"]) == (3, 3, 3)
    assert rows["plateau"]["step"] == 6 and rows["plateau"]["best_step"] == 2
    assert rows["killed"]["step"] == 3 and rows["killed"]["total_steps"] == 6
    assert rows["live"]["total_steps"] == 100000 and rows["live"]["model"] == "tiny"
    assert rows["finished"]["model"] == "llama/tiny" and rows["finished"]["stage"] == "pretrain"
    assert runs_json(tmp_path)["live"]["status"] == "interrupted"  # once its process is gone

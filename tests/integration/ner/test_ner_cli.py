"""`--task ner` end to end through the real CLI: fine-tune, continue with label maps, resume, recover, load in HF."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tempering.tracking.metrics import read_metrics
from tests.conftest import assert_user_error, reached, run_temper
from tests.integration.ner.conftest import NER_RUN

transformers = pytest.importorskip("transformers")


def records(run, **match):
    return [r for r in read_metrics(run / "metrics.jsonl") if all(r.get(k) == v for k, v in match.items())]


def test_mlm_backbone_loads_in_auto_model_for_masked_lm_with_equal_logits(mlm_backbone):
    from tempering.checkpoint.model_loading import load_model

    final = mlm_backbone / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["DistilBertForMaskedLM"] and config["model_type"] == "distilbert"
    tokenizer = transformers.AutoTokenizer.from_pretrained(final)
    assert tokenizer.mask_token == "<|mask|>" and tokenizer.mask_token_id == config["vocab_size"] - 1
    ours = load_model(final).model
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(final).eval()
    ids = torch.tensor([tokenizer("The <|mask|> statement returns a value.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-5, rtol=0)
    vals = records(mlm_backbone, split="val")
    assert vals and all(math.isfinite(r["loss"]) and "ppl" in r for r in vals)


def test_fine_tune_from_the_backbone_reports_entity_f1_and_loads_in_hf(ner_run, ner_data):
    from tempering.checkpoint.model_loading import load_model

    vals = records(ner_run, split="val:new")
    assert [r["step"] for r in vals] == [0, 10, 20]
    assert vals[-1]["f1"] > vals[0]["f1"] and "f1/PER" in vals[-1] and "precision" in vals[-1]
    summary = json.loads((ner_run / "summary.json").read_text())
    assert (summary["best_metric"], summary["best_metric_mode"]) == ("f1", "max")
    assert summary["best_value"] == max(r["f1"] for r in vals[1:])
    best = json.loads((ner_run / "best" / "meta.json").read_text())
    assert best["step"] == summary["best_step"] and best["task"] == "token_classification"
    final = ner_run / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["DistilBertForTokenClassification"]
    assert config["id2label"] == {"0": "O", "1": "B-DATE", "2": "B-GPE", "3": "I-GPE", "4": "B-ORG", "5": "I-ORG",
                                  "6": "B-PER", "7": "I-PER"}
    ours = load_model(final).model
    theirs = transformers.AutoModelForTokenClassification.from_pretrained(final).eval()
    ids = torch.tensor([[0, 40, 41, 300, 17, 1], [0, 77, 120, 1, 2, 2]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask)[mask.bool()], theirs(input_ids=ids, attention_mask=mask)
                                   .logits[mask.bool()], atol=1e-5, rtol=0)


def continue_on_kernel(ner_run, ner_data, save_dir, *extra, check=True):
    return run_temper("post-train", "--checkpoint", ner_run, "--new-dataset", ner_data["kernel"]["train"],
                      "--val-data", ner_data["kernel"]["val"], "--save-dir", save_dir, *NER_RUN, *extra,
                      check=check)


def test_strict_labels_refuse_new_data_with_another_label_set_and_leave_nothing(ner_run, ner_data, tmp_path):
    result = continue_on_kernel(ner_run, ner_data, tmp_path / "strict", "--max-steps", "2", check=False)
    assert_user_error(result, "only in the data: B-PRODUCT, I-PRODUCT", "ner.label_mapping=merge")
    assert not (tmp_path / "strict").exists()


def test_merge_keeps_old_rows_bit_identical_and_adds_new_labels(ner_run, ner_data, tmp_path):
    run = tmp_path / "merge"
    # lr 0: what the head looks like after the merge, before any update.
    continue_on_kernel(ner_run, ner_data, run, "--max-steps", "2", "ner.label_mapping=merge", "--lr", "0",
                       "--strategy", "combined", "--old-dataset", ner_data["docs"]["train"])
    old, new = load_file(ner_run / "best" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    n = old["classifier.weight"].shape[0]
    assert torch.equal(new["classifier.weight"][:n], old["classifier.weight"])
    assert torch.equal(new["classifier.bias"][:n], old["classifier.bias"])
    assert new["classifier.weight"].shape[0] == n + 2 and new["classifier.weight"][n:].abs().sum() > 0
    assert all(torch.equal(new[name], old[name]) for name in old if not name.startswith("classifier."))
    id2label = json.loads((run / "final" / "config.json").read_text())["id2label"]
    old_labels = json.loads((ner_run / "best" / "config.json").read_text())["id2label"]
    assert {k: v for k, v in id2label.items() if int(k) < n} == old_labels
    assert [id2label[str(n)], id2label[str(n + 1)]] == ["B-PRODUCT", "I-PRODUCT"]
    meta = json.loads((run / "final" / "meta.json").read_text())
    assert meta["labels_added"] == ["B-PRODUCT", "I-PRODUCT"] and meta["strategy"] == "combined"
    splits = {r["split"] for r in records(run) if "f1" in r}
    assert splits == {"val:new", "val:original"}


def test_continued_training_watches_new_and_original_f1(ner_run, ner_data, tmp_path):
    run = tmp_path / "continued"
    continue_on_kernel(ner_run, ner_data, run, "--max-steps", "12", "--eval-steps", "6", "ner.label_mapping=merge",
                       "--strategy", "combined", "--old-dataset", ner_data["docs"]["train"])
    new, original = records(run, split="val:new"), records(run, split="val:original")
    start = json.loads((ner_run / "best" / "meta.json").read_text())["step"]  # the step counter continues
    assert [r["step"] for r in new] == [r["step"] for r in original]
    assert new[0]["step"] == start and new[-1]["step"] == start + 12
    assert new[-1]["loss"] < new[0]["loss"] and "f1/PRODUCT" in new[-1] and "f1/PRODUCT" not in original[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_split"] == "val:new" and set(summary["val_at_end"]) == {"val:new", "val:original"}


def ner_pretrain(data, save_dir, *extra, check=True, **kwargs):
    return run_temper("pretrain", "--preset", "encoder_tiny", "--task", "ner", "--data", data["docs"]["train"],
                      "--val-data", data["docs"]["val"], "--save-dir", save_dir, *NER_RUN, *extra, check=check,
                      **kwargs)


def test_killed_ner_runs_resume_bit_identically(ner_data, workspace, tmp_path):
    args = ["--tokenizer", str(workspace / "tok"), "--max-steps", "12", "--eval-steps", "5", "--save-steps", "3",
            "training.save_total_limit=2"]
    reference = tmp_path / "reference"
    ner_pretrain(ner_data, reference, *args)
    run = tmp_path / "killed"
    died = ner_pretrain(ner_data, run, *args, "debug.kill_during_save_at_step=6", check=False)
    assert died.returncode == -signal.SIGKILL
    command = [sys.executable, "-m", "tempering", "pretrain", "--preset", "encoder_tiny", "--task", "ner", "--data",
               str(ner_data["docs"]["train"]), "--val-data", str(ner_data["docs"]["val"]), "--save-dir", str(run),
               *NER_RUN, *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if reached(lambda: max([r["step"] for r in records(run, split="train")] or [0]) >= 9):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    ner_pretrain(ner_data, run, *args)
    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs) and ours.keys() == theirs.keys()
    assert [(r["step"], r["loss"]) for r in records(run, split="train")] == \
        [(r["step"], r["loss"]) for r in records(reference, split="train")]
    assert [(r["step"], r["f1"]) for r in records(run, split="val")] == \
        [(r["step"], r["f1"]) for r in records(reference, split="val")]


def test_injected_nan_rolls_back_and_the_run_finishes(ner_data, workspace, tmp_path):
    run = tmp_path / "nan"
    ner_pretrain(ner_data, run, "--tokenizer", workspace / "tok", "--max-steps", "6", "--save-steps", "2",
                 "debug.inject_nan_at_step=4")
    (event,) = records(run, event="recovery")
    assert event["step"] == 4 and event["restored_step"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recoveries"] == 1 and summary["final_step"] == 6
    assert all(math.isfinite(r["loss"]) for r in records(run, split="train"))


def test_a_decoder_preset_or_checkpoint_cannot_do_ner(ner_data, workspace, base_run, tmp_path):
    result = run_temper("pretrain", "--preset", "tiny", "--task", "ner", "--data", ner_data["docs"]["train"],
                        "--tokenizer", workspace / "tok", "--save-dir", tmp_path / "x", "--max-steps", "2")
    assert_user_error(result, "task token_classification (--task ner) needs another kind of model",
                      "llama family trains causal_lm")
    result = run_temper("post-train", "--task", "ner", "--checkpoint", base_run, "--new-dataset",
                        ner_data["docs"]["train"], "--save-dir", tmp_path / "y", "--max-steps", "2")
    assert_user_error(result, "needs another kind of model")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

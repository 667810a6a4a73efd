"""`temper sft`, `dpo`, `inspect-data` and chat generation end to end (tiny preset, sample chat set)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tempering.data.chat import get_template, load_conversations, render_conversation
from tempering.tokenizer import load_tokenizer
from tempering.tracking.metrics import read_metrics
from tests.conftest import assert_user_error, run_temper


@pytest.fixture
def chat(workspace):
    """Paths of the sample chat set."""
    return {name: workspace / "corpus" / "chat" / f"{name}.jsonl"
            for name in ("chat_train", "chat_val", "preference_train", "preference_val")}


def stage(command, base_run, save_dir, data, *extra, check=True):
    return run_temper(command, "--checkpoint", base_run, "--data", data, "--save-dir", save_dir,
                      "--seq-len", "128", "--batch-size", "4", "training.eval_max_batches=6", "training.log_steps=1",
                      *extra, check=check)


def val_losses(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "val"]


def test_sft_lowers_held_out_loss_and_ships_a_template_transformers_reproduces(base_run, chat, tmp_path):
    run = tmp_path / "sft"
    stage("sft", base_run, run, chat["chat_train"], "--max-steps", "30", "--lr", "3e-3", "--eval-steps", "15")
    vals = val_losses(run)
    assert [r["step"] for r in vals] == [0, 15, 30] and vals[-1]["loss"] < vals[0]["loss"] - 0.2
    assert json.loads((run / "final" / "meta.json").read_text())["chat_template"] == "chatml"

    transformers = pytest.importorskip("transformers")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(run / "final")
    tokenizer = load_tokenizer(run / "final")
    template = get_template("tokenizer", run / "final")
    im_end = tokenizer.tokenizer.token_to_id("<|im_end|>")
    for conversation in load_conversations(chat["chat_val"], limit=5):
        ours = render_conversation(conversation, template, tokenizer, max_seq_length=512)
        messages = [{"role": m.role, "content": m.content} for m in conversation.messages]
        theirs = hf_tokenizer.apply_chat_template(messages, tokenize=True)
        theirs = theirs["input_ids"] if isinstance(theirs, dict) or hasattr(theirs, "keys") else theirs
        assert ours.input_ids.tolist() == list(theirs)
        assert im_end in ours.labels.tolist()  # the end-of-turn token is trained, so the model learns to stop


def test_inspect_data_shows_the_trained_spans(base_run, chat):
    result = run_temper("inspect-data", "--checkpoint", base_run, "--data", chat["chat_val"], "--num-samples", "2",
                        "--seq-len", "128", check=True)
    first = next(load_conversations(chat["chat_val"], limit=1)[0].messages[i] for i in (2,))
    assert f"⟦{first.content}<|im_end|>⟧" in result.stdout
    assert "packing into rows of 128: non-pad fraction" in result.stdout and "padding: non-pad fraction" in result.stdout
    longer = run_temper("inspect-data", "--checkpoint", base_run, "--data", chat["chat_val"], "--num-samples", "0",
                        "--seq-len", "128", "--pack-length", "256", check=True)
    assert "packing into rows of 256: non-pad fraction" in longer.stdout
    assert_user_error(run_temper("inspect-data", "--checkpoint", base_run, "--data", chat["chat_val"],
                                 "--seq-len", "128", "--pack-length", "64"),
                      "sft.pack_length (64) is shorter than data.seq_len (128)")


def test_generation_in_chat_mode_stops_at_the_end_of_turn_here_and_in_transformers(base_run, chat, tmp_path):
    run = tmp_path / "sft"
    stage("sft", base_run, run, chat["chat_train"], "--max-steps", "40", "--lr", "5e-3", "--val-split", "0")
    question = "What does `json.dumps` do?"
    result = run_temper("generate", "--checkpoint", run, "--chat", question,
                        "--temperature", "0", "--max-new-tokens", "80", check=True)
    assert result.stdout.startswith(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    answer = result.stdout.split("<|im_start|>assistant\n", 1)[1].removesuffix("\n")
    assert "<|im_end|>" not in answer

    # transformers' generate on the checkpoint stops at the same place: generation_config.json lists <|im_end|>.
    transformers = pytest.importorskip("transformers")
    final = run / "final"
    tokenizer = transformers.AutoTokenizer.from_pretrained(final)
    model = transformers.AutoModelForCausalLM.from_pretrained(final).eval()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in json.loads((final / "generation_config.json").read_text())["eos_token_id"]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**prompt, max_new_tokens=80, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    assert output[-1].item() == im_end and len(output) < 80  # stopped at the end of the assistant turn
    assert tokenizer.decode(output[:-1]) == answer


def test_dpo_learns_the_preferences_and_precomputed_reference_matches_live(base_run, chat, tmp_path):
    args = ["--max-steps", "8", "--lr", "3e-3", "--batch-size", "8", "--beta", "0.5",
            "data.datasets.0.limit=16", f"data.val_data=[{{path: {chat['preference_train']}, limit: 16}}]"]
    live, precomputed = tmp_path / "live", tmp_path / "pre"
    stage("dpo", base_run, live, chat["preference_train"], *args)
    stage("dpo", base_run, precomputed, chat["preference_train"], *args, "--precompute-ref")
    vals = val_losses(live)
    assert vals[0]["rewards/accuracies"] == 0.0 and vals[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert vals[-1]["rewards/accuracies"] > 0.5 and vals[-1]["rewards/margins"] > 0
    train_live = [r for r in read_metrics(live / "metrics.jsonl") if r.get("split") == "train"]
    train_pre = [r for r in read_metrics(precomputed / "metrics.jsonl") if r.get("split") == "train"]
    assert [r["loss"] for r in train_pre] == pytest.approx([r["loss"] for r in train_live], abs=1e-6)
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"} <= set(train_live[0])


def test_killed_sft_resumes_bit_identically(base_run, chat, tmp_path):
    args = ["--max-steps", "10", "--save-steps", "4", "--eval-steps", "5"]
    reference = tmp_path / "reference"
    stage("sft", base_run, reference, chat["chat_train"], *args)
    run = tmp_path / "killed"
    died = stage("sft", base_run, run, chat["chat_train"], *args, "debug.kill_during_save_at_step=8", check=False)
    assert died.returncode == -9
    resumed = stage("sft", base_run, run, chat["chat_train"], *args)
    assert "resuming from" in resumed.stderr
    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_bad_chat_inputs_exit_2_and_write_nothing(base_run, chat, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"}]}) + "\n"
                      + json.dumps({"instruction_text": "no known fields"}) + "\n")
    out = tmp_path / "out"
    assert_user_error(stage("sft", base_run, out, broken, "--max-steps", "1", check=False), "broken.jsonl:2")
    assert_user_error(stage("sft", base_run, out, chat["chat_val"], "--max-steps", "1", "--template", "chatmll",
                            check=False), "did you mean 'chatml'")
    assert_user_error(stage("sft", base_run, out, chat["chat_val"], "--max-steps", "1",
                            "data.datasets.0.transform=sharegtp", check=False), "sharegpt")
    bad_args = tmp_path / "tools.jsonl"
    bad_args.write_text(json.dumps({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]}]}) + "\n")
    assert_user_error(stage("sft", base_run, out, bad_args, "--max-steps", "1", check=False), "tools.jsonl:1",
                      "JSON")
    assert not out.exists()


def test_sft_packs_rows_longer_than_seq_len_into_fewer_batches(base_run, chat, tmp_path):
    def one_epoch(run, *extra):
        result = stage("sft", base_run, run, chat["chat_val"], "--epochs", "1", "--val-split", "0",
                       "--seq-len", "256", *extra)
        records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "train"]
        return result.stdout + result.stderr, records[-1]

    short_log, short = one_epoch(tmp_path / "rows256")
    long_log, long = one_epoch(tmp_path / "rows512", "--pack-length", "512", "--batch-size", "2")
    assert "packed into rows of 256" in short_log and "packed into rows of 512" in long_log
    assert "rows are 88% full" in short_log and "--pack-length 512 --batch-size 2 fills 93%" in short_log
    assert "hint: packed rows" not in long_log
    # Same examples, each once: the same tokens; rows of 512 waste fewer slots (93 % full against 88 %
    # in rows of 256, as inspect-data reports), so fewer batches of 1024 slots.
    assert long["tokens_seen"] == short["tokens_seen"]
    assert long["step"] < short["step"], (long["step"], short["step"])

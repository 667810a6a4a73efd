"""Speech recognition through the real `temper` command on tiny generated audio (tones, no download).

Pretrain `audio_enc_tiny` with CTC, kill -9 and resume bit-identically, post-train with the model
type read from the checkpoint, transcribe, eval, NaN recovery, prep, and the one-line user errors.
"""

from __future__ import annotations

import csv
import json
import signal

import jiwer
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from tests.conftest import assert_user_error, run_temper
from tests.speech.tones import write_tone_corpus

TINY = ["--preset", "audio_enc_tiny", "--batch-size", "8", "--lr", "5e-3", "--warmup-steps", "5",
        "training.log_steps=1"]


def records(run, split=None):
    """metrics.jsonl records (of one split)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """48 tone sentences, the last 8 marked val."""
    return write_tone_corpus(tmp_path_factory.mktemp("tones"), 48, val=8)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """An audio_enc_tiny run of 50 steps at a constant LR of 1e-2 (SpecAugment off): it learns the tones."""
    run = tmp_path_factory.mktemp("asr") / "run"
    run_temper("pretrain", *TINY, "--data", corpus, "--save-dir", run, "--max-steps", "50", "--lr", "1e-2",
               "--lr-schedule", "constant", "speech.time_masks=0", "speech.freq_masks=0", check=True, timeout=1200)
    return run


def test_ctc_loss_falls_and_best_is_chosen_by_wer(trained):
    losses = [r["loss"] for r in records(trained, "train")]
    assert losses[-1] < 0.3 * losses[0]
    val = records(trained, "val")
    assert {"loss", "wer", "cer"} <= val[-1].keys() and val[-1]["wer"] < val[0]["wer"]
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["best_metric"] == "wer" and summary["best_value"] == min(r["wer"] for r in val[1:])
    meta = json.loads((trained / "best" / "meta.json").read_text())
    assert meta["step"] == summary["best_step"] and meta["family"] == "audio_encoder"
    assert json.loads((trained / "best" / "config.json").read_text())["model_type"] == "tempering_audio_encoder"


def test_transcribe_prints_each_file_and_eval_scores_the_same_transcripts(trained, corpus):
    rows = list(csv.DictReader(corpus.read_text(encoding="utf-8").splitlines()))[-8:]
    files = [str(corpus.parent / r["path"]) for r in rows]
    result = run_temper("transcribe", "--checkpoint", trained, *files, check=True)
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    texts = [line.split("\t", 1)[1] for line in lines]
    assert "real-time factor" in result.stderr + result.stdout
    wer = jiwer.wer([r["transcript"] for r in rows], texts)
    assert wer < 0.5  # the tones are learnt
    val_only = corpus.parent / "val_only.csv"
    with open(val_only, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["path", "transcript"])
        writer.writeheader()
        writer.writerows({"path": r["path"], "transcript": r["transcript"]} for r in rows)
    evaluated = json.loads(run_temper("eval", "--checkpoint", trained, "--data", val_only, "--json",
                                      check=True).stdout)
    scores = evaluated["datasets"]["val_only"]
    assert scores["utterances"] == 8
    assert scores["wer"] == pytest.approx(wer) and scores["cer"] == pytest.approx(
        jiwer.cer([r["transcript"] for r in rows], texts))
    single = run_temper("transcribe", "--checkpoint", trained, "--beam", "4", files[0], check=True)
    assert single.stdout.strip() == texts[0]  # one file: just its transcript; beam agrees on confident frames
    lm_text = corpus.parent / "lm.txt"  # the domain's sentences: the word model can only pull towards them
    lm_text.write_text("\n".join(r["transcript"] for r in csv.DictReader(corpus.open(encoding="utf-8"))) + "\n")
    fused = run_temper("transcribe", "--checkpoint", trained, "--lm-text", lm_text, *files, check=True)
    fused_texts = [line.split("\t", 1)[1] for line in fused.stdout.splitlines()]
    assert len(fused_texts) == len(files) and "word language model: 12 words" in fused.stderr + fused.stdout
    assert jiwer.wer([r["transcript"] for r in rows], fused_texts) <= wer
    assert_user_error(run_temper("transcribe", "--checkpoint", trained, "--lm-text", corpus.parent / "no.txt",
                                 files[0]), "no such file")
    assert_user_error(run_temper("transcribe", "--checkpoint", trained, "--lm-weight", "0.3", files[0]),
                      "add --lm-text FILE")


def test_killed_run_resumes_bit_identically_with_specaugment(corpus, tmp_path):
    args = [*TINY, "--data", corpus, "--max-steps", "12", "--eval-steps", "4", "--save-steps", "3",
            "training.save_total_limit=2"]
    reference = tmp_path / "reference"
    run_temper("pretrain", *args, "--save-dir", reference, check=True)
    run = tmp_path / "killed"
    died = run_temper("pretrain", *args, "--save-dir", run, "debug.kill_during_save_at_step=6")
    assert died.returncode == -signal.SIGKILL
    run_temper("pretrain", *args, "--save-dir", run, check=True)
    ours, theirs = load_file(run / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert [(r["step"], r["loss"]) for r in records(run, "train")] == \
        [(r["step"], r["loss"]) for r in records(reference, "train")]
    assert [(r["step"], r["wer"]) for r in records(run, "val")] == [(r["step"], r["wer"]) for r in records(reference, "val")]


def test_post_train_detects_the_audio_model_and_honours_resets_and_freezing(trained, corpus, tmp_path):
    run = tmp_path / "post"
    run_temper("post-train", "--checkpoint", trained, "--new-dataset", corpus, "--save-dir", run, "--max-steps", "4",
               "--batch-size", "8", "--eval-steps", "2", "--reset-optimizer", "--reset-scheduler", "--reset-step",
               "training.freeze_first_blocks=1", check=True)
    meta = json.loads((run / "final" / "meta.json").read_text())
    assert meta["family"] == "audio_encoder" and meta["post_training"] is True and meta["step"] == 4
    assert meta["reset"] == {"optimizer": True, "scheduler": True, "step": True}
    splits = {r["split"] for r in records(run) if "split" in r}
    assert {"val:new", "val:original"} <= splits
    before, after = load_file(trained / "best" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    frozen = [n for n in before if n.startswith(("subsampling.", "encoder.layers.0."))]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["encoder.layers.1.self_attn.q_proj.weight"],
                           after["encoder.layers.1.self_attn.q_proj.weight"])


def test_nan_injection_rolls_back_and_the_run_finishes(corpus, tmp_path):
    run = tmp_path / "nan"
    run_temper("pretrain", *TINY, "--data", corpus, "--save-dir", run, "--max-steps", "6",
               "debug.inject_nan_at_step=3", check=True)
    events = [r for r in records(run) if r.get("event") == "recovery"]
    assert len(events) == 1 and events[0]["step"] == 3
    assert json.loads((run / "summary.json").read_text())["final_step"] == 6


def test_prep_writes_a_csv_that_trains(tmp_path):
    source = tmp_path / "audio"
    corpus = write_tone_corpus(source / "nested", 10)
    for row in csv.DictReader(corpus.read_text(encoding="utf-8").splitlines()):
        (corpus.parent / row["path"]).with_suffix(".txt").write_text(row["transcript"].upper() + ".")
    corpus.unlink()
    (source / "broken.wav").write_bytes(b"RIFF nonsense")
    result = run_temper("prep", "--format", "audio_asr", "--input", source, "--output", tmp_path / "asr.csv",
                        "--val-fraction", "0.3", check=True)
    assert "skipped: unreadable 1" in result.stdout + result.stderr
    rows = list(csv.DictReader((tmp_path / "asr.csv").read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 10 and all(r["transcript"] == r["transcript"].lower() for r in rows)
    assert {r["split"] for r in rows} == {"train", "val"}
    run_temper("pretrain", *TINY, "--data", tmp_path / "asr.csv", "--save-dir", tmp_path / "run", "--max-steps", "2",
               check=True)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_speech_user_errors_are_one_line_exit_2(corpus, trained, tmp_path):
    assert_user_error(run_temper("pretrain", *TINY, "--data", tmp_path / "missing.csv", "--save-dir",
                                 tmp_path / "r", "--max-steps", "2"), "missing.csv does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,words\nx.wav,hello\n")
    assert_user_error(run_temper("pretrain", *TINY, "--data", bad, "--save-dir", tmp_path / "r2", "--max-steps", "2"),
                      "no 'path' column")
    assert_user_error(run_temper("prep", "--format", "audio_asr", "--input", tmp_path / "nowhere", "--output",
                                 tmp_path / "x.csv"), "no such file or directory")
    assert_user_error(run_temper("transcribe", "--checkpoint", trained, tmp_path / "none.wav"), "none.wav")
    assert_user_error(run_temper("pretrain", *TINY, "--data", corpus, "--save-dir", tmp_path / "r3", "--max-steps",
                                 "2", "model.n_kv_heads=1"), "model.n_kv_heads is not a dimension")


def test_talker_trains_on_asr_durations_speaks_a_wav_and_post_trains(trained, corpus, tmp_path):
    talker = tmp_path / "talker"
    run_temper("pretrain", "--preset", "talker_tiny", "--data", corpus, "--asr-checkpoint", trained, "--save-dir",
               talker, "--max-steps", "10", "--batch-size", "8", "--lr", "3e-3", "training.log_steps=1",
               "training.eval_max_batches=1", check=True, timeout=1200)
    losses = [r["loss"] for r in records(talker, "train")]
    assert losses[-1] < losses[0]
    val = records(talker, "val")[-1]
    assert {"mel_l1", "duration_loss", "intelligibility_cer", "intelligibility_wer"} <= val.keys()
    meta = json.loads((talker / "final" / "meta.json").read_text())
    assert meta["family"] == "talker" and meta["asr_checkpoint"] == str(trained / "best")
    talker_val = corpus.parent / "talker_val.csv"  # the run's val rows alone: eval must score them as validation did
    rows = list(csv.DictReader(corpus.read_text(encoding="utf-8").splitlines()))[-8:]
    with open(talker_val, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["path", "transcript"])
        writer.writeheader()
        writer.writerows({"path": r["path"], "transcript": r["transcript"]} for r in rows)
    evaluated = json.loads(run_temper("eval", "--checkpoint", talker / "final", "--data", talker_val, "--json",
                                      check=True, timeout=600).stdout)
    assert evaluated["family"] == "talker" and evaluated["step"] == val["step"] == 10
    scores = evaluated["datasets"]["talker_val"]
    assert scores["utterances"] + scores["dropped"] == 8
    # The same frames and voice as the run's own validation; the durations' targets come from a fresh
    # alignment by the ASR in another process, which may move a tied frame, hence the looser duration term.
    for key, tolerance in (("mel_l1", 1e-5), ("intelligibility_cer", 1e-6), ("intelligibility_wer", 1e-6),
                           ("duration_loss", 5e-3), ("loss", 5e-3)):
        assert scores[key] == pytest.approx(val[key], rel=tolerance), key
    table = run_temper("eval", "--checkpoint", talker / "final", "--data", talker_val, "--asr-checkpoint", trained,
                       check=True, timeout=600).stdout
    assert "intelligibility CER" in table and f"{val['intelligibility_cer']:.4f}" in table
    out = tmp_path / "said.wav"
    run_temper("generate", "--checkpoint", talker, "--speak", "Bad cab!", "--output", out, check=True)
    info = soundfile.info(str(out))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 16_000, 1)
    assert 7 * 0.01 <= info.duration <= 7 * 0.4 + 0.1  # 7 characters, 1 to 40 frames of 10 ms each
    post = tmp_path / "talker_post"
    run_temper("post-train", "--checkpoint", talker, "--new-dataset", corpus, "--asr-checkpoint", trained,
               "--save-dir", post, "--max-steps", "2", "--batch-size", "8", "--reset-step",
               "training.eval_max_batches=1", check=True, timeout=1200)
    assert json.loads((post / "final" / "meta.json").read_text())["family"] == "talker"
    assert_user_error(run_temper("pretrain", "--preset", "talker_tiny", "--data", corpus, "--save-dir",
                                 tmp_path / "x", "--max-steps", "1"), "--asr-checkpoint")
    assert_user_error(run_temper("generate", "--checkpoint", trained, "--speak", "hi", "--output", out),
                      "needs a Talker")

"""Speech recognition on real sentences spoken by espeak-ng voices: WER after a CPU-time budget of training.

    python benchmarks/speech_asr.py [--data ../shared/data/speech/espeak] [--train CSV] [--cpu-minutes 30]
                                    [--preset audio_enc_small] [--batch-size 16] [--lr 1e-3]
                                    [--precision bf16] [--work /tmp/speech_asr] [--out FILE.json]

1. `temper pretrain --preset audio_enc_small --data train.csv --val-data val.csv` with a constant
   learning rate after warmup (the end of a CPU-time budget is not known in steps, so there is no
   decay to schedule), evaluated every --eval-steps; when the training process has used
   --cpu-minutes of CPU time (user + system, all its threads) it gets SIGTERM, which checkpoints
   and stops. best/ is the checkpoint with the lowest validation WER.
2. `temper eval` on val.csv (greedy CTC): WER and CER over the 200 unseen sentences.
3. Per voice: the best checkpoint transcribes every val file (the `temper transcribe` code path),
   WER per espeak-ng voice with jiwer; the real-time factor is compute seconds per audio second.
4. The curve: validation WER against training CPU-minutes and steps, from metrics.jsonl.
Output: JSON (--out) and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from cpu_budget import run_with_cpu_budget

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "speech" / "espeak"


def train(args, run: Path) -> dict:
    """Run the training process until it ends or spends its CPU budget; return CPU and wall seconds."""
    command = [sys.executable, "-m", "tempering", "pretrain", "--preset", args.preset,
               "--data", args.train or args.data / "train.csv", "--val-data", args.data / "val.csv", "--save-dir", run,
               "--max-steps", args.max_steps, "--batch-size", args.batch_size, "--lr", args.lr,
               "--lr-schedule", "constant", "--warmup-steps", args.warmup_steps, "--eval-steps", args.eval_steps,
               "--precision", args.precision, "--save-steps", args.eval_steps, "training.log_steps=10",
               "--seed", args.seed]
    return run_with_cpu_budget(command, args.cpu_minutes * 60, run.parent / "train.log")


def curve(run: Path) -> list[dict]:
    """(step, validation WER/CER/loss, training CPU is not logged: wall seconds) per evaluation."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = {r["step"]: r["time_s"] for r in records if r.get("split") == "train"}
    return [{"step": r["step"], "wall_s": times.get(r["step"]), "val_loss": round(r["loss"], 4),
             "wer": round(r["wer"], 4), "cer": round(r["cer"], 4)} for r in records if r.get("split") == "val"]


def per_voice(run: Path, data: Path, *, beam: int | None = None, fusion=None) -> tuple[dict, dict]:
    """WER per voice of the best checkpoint's transcripts (greedy, or beam search with a word LM), and the timing."""
    import jiwer

    from tempering.generation.transcribe import load_asr_model, transcribe_files

    rows = list(csv.DictReader((data / "val.csv").read_text(encoding="utf-8").splitlines()))
    loaded = load_asr_model(str(run))
    result = transcribe_files(loaded, [str(data / r["path"]) for r in rows], beam=beam, fusion=fusion)
    by_voice = defaultdict(lambda: ([], []))
    for row, text in zip(rows, result.texts, strict=True):
        accent = row["voice"].split("+")[0]
        by_voice[accent][0].append(row["transcript"])
        by_voice[accent][1].append(text)
    wer = {voice: {"utterances": len(refs), "wer": round(jiwer.wer(refs, hyps), 4)}
           for voice, (refs, hyps) in sorted(by_voice.items())}
    references = [r["transcript"] for r in rows]
    overall = {"wer": round(jiwer.wer(references, result.texts), 4),
               "cer": round(jiwer.cer(references, result.texts), 4),
               "audio_s": round(result.audio_s, 1), "compute_s": round(result.compute_s, 2),
               "real_time_factor": round(result.real_time_factor, 4), "threads": os.cpu_count()}
    return wer, overall


def tune_fusion(run: Path, dev: Path, lm_text: Path, utterances: int, beam: int) -> tuple[object, list[dict]]:
    """The word-LM weight and bonus with the lowest WER on the first `utterances` of a dev CSV (not val), and the grid."""
    import jiwer
    import numpy as np

    from tempering.data.audio.io import read_audio
    from tempering.generation.transcribe import frame_logits, load_asr_model, word_fusion
    from tempering.models.audio_encoder.decoding import beam_search_ids

    loaded = load_asr_model(str(run))
    rows = list(csv.DictReader(dev.read_text(encoding="utf-8").splitlines()))[:utterances]
    logits = frame_logits(loaded, [read_audio(dev.parent / row["path"]) for row in rows])
    log_probs = [frame.float().log_softmax(-1).numpy().astype(np.float64) for frame in logits]
    base = word_fusion(loaded, [str(lm_text)], weight=0.0, bonus=0.0)
    references, grid = [r["transcript"] for r in rows], []
    for weight in (0.3, 0.5, 0.8):
        for bonus in (1.0, 2.0, 3.0):
            fusion = base.reweighted(weight, bonus)
            texts = [loaded.tokenizer.decode(beam_search_ids(lp, loaded.arch.blank_id, beam, fusion=fusion),
                                             skip_special_tokens=True) for lp in log_probs]
            grid.append({"weight": weight, "bonus": bonus, "dev_wer": round(jiwer.wer(references, texts), 4)})
            print(json.dumps(grid[-1]), flush=True)
    chosen = min(grid, key=lambda point: point["dev_wer"])
    return base.reweighted(chosen["weight"], chosen["bonus"]), grid


def main() -> None:
    """Train, evaluate, transcribe; print and save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=Path, default=None,
                        help="training CSV (default: DATA/train.csv); e.g. train_plus.csv from speech_synthesise.py")
    parser.add_argument("--cpu-minutes", type=float, default=30.0)
    parser.add_argument("--preset", default="audio_enc_small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-text", type=Path, default=None,
                        help="also decode val with a word LM of this text (from speech_lm_text.py, which keeps the "
                             "val and dev sentences out), its weight and bonus tuned on --dev")
    parser.add_argument("--dev", type=Path, default=None,
                        help="with --lm-text: a speech CSV apart from train and val to tune the LM weights on")
    parser.add_argument("--dev-utterances", type=int, default=100, help="dev utterances the tuning decodes")
    parser.add_argument("--beam", type=int, default=16, help="beam width of the LM decoding (default 16)")
    parser.add_argument("--skip-training", action="store_true",
                        help="evaluate the run already in --work instead of training (e.g. to add --lm-text)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/speech_asr"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speech_asr.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.work / "run"
    previous = json.loads(args.out.read_text()) if args.skip_training and args.out.is_file() else {}
    training = previous.get("training") if args.skip_training else train(args, run)
    evaluated = subprocess.run([sys.executable, "-m", "tempering", "eval", "--checkpoint", str(run), "--data",
                                str(args.data / "val.csv"), "--json", "--batch-size", "16"],
                               capture_output=True, text=True, check=True)
    overall = json.loads(evaluated.stdout.strip().splitlines()[-1])
    voices, transcription = per_voice(run, args.data)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "training": training,
              "eval": overall, "per_voice": voices, "transcribe": transcription, "curve": curve(run)}
    if args.lm_text:
        fusion, grid = tune_fusion(run, args.dev, args.lm_text, args.dev_utterances, args.beam)
        lm_voices, lm_transcription = per_voice(run, args.data, beam=args.beam, fusion=fusion)
        result["word_lm"] = {"words": fusion.lm.num_words, "bigrams": len(fusion.lm.bigrams), "grid": grid,
                             "chosen": {"weight": fusion.weight, "bonus": fusion.bonus}, "per_voice": lm_voices,
                             "transcribe": lm_transcription}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    val = next(iter(overall["datasets"].values()))
    print(f"| {args.preset} | {training['cpu_s'] / 60:.1f} CPU-min ({training['wall_s'] / 60:.1f} min wall) | "
          f"step {overall['step']} | WER {val['wer']:.3f} | CER {val['cer']:.3f} | "
          f"RTF {transcription['real_time_factor']:.3f} |")
    for voice, values in voices.items():
        lm_wer = result["word_lm"]["per_voice"][voice]["wer"] if args.lm_text else float("nan")
        print(f"| {voice} | {values['utterances']} | {values['wer']:.3f} | {lm_wer:.3f} |")
    if args.lm_text:
        lm = result["word_lm"]
        print(f"| with the word LM (weight {fusion.weight}, bonus {fusion.bonus}, beam {args.beam}) | "
              f"WER {lm['transcribe']['wer']:.3f} | CER {lm['transcribe']['cer']:.3f} | "
              f"RTF {lm['transcribe']['real_time_factor']:.3f} |")


if __name__ == "__main__":
    main()

"""NER: Tempering against HF `Trainer` + `DistilBertForTokenClassification`, and continued training docs → kernel.

    python benchmarks/ner_vs_hf.py [--data ../shared/data/ner] [--text ../shared/data/text] [--work DIR]
                                   [--epochs 2] [--smoke] [--out benchmarks/results/ner_vs_hf.json]

One run, in order (every temper step is the real CLI):
1. a byte-level BPE tokenizer (8192) trained on the Python-docs text, and token shards of it;
2. an MLM backbone: `temper pretrain --preset distilbert --objective mlm` with the encoder narrowed to
   4 × 256 (--size small, the default; --size distilbert keeps 6 × 768) — a user without a downloaded
   backbone makes one the same way;
3. the common starting point: `temper post-train --task ner` from the backbone for one step at lr 0, which
   adds the head on docs_train's labels (its final/ is both sides' initial weights);
4. Tempering: `temper post-train --task ner` from that checkpoint (fresh optimizer, schedule, step) on
   docs_train; HF: `Trainer` on `DistilBertForTokenClassification.from_pretrained` of the same checkpoint, on
   the same word-piece rows (aligned by Tempering), same epochs, batch, LR, warmup, cosine to 0, AdamW
   (0.9, 0.999, 1e-8), weight decay 0, clipping 1.0, dropout 0.1 — once with Trainer's defaults and once
   with `group_by_length=True`;
5. both final models scored by the same code (transformers' class, strict IOB2 entity F1 with seqeval's
   entities) on docs_val; throughput = non-pad tokens / training time (Tempering's from metrics.jsonl,
   evaluation excluded; HF's `train_runtime`, which has no evaluation);
6. continued training of Tempering's docs model on kernel_train (`ner.label_mapping=merge`, fresh
   optimizer and schedule at a third of the LR) with `combined` (docs_train + kernel_train) and with
   `new_only`: val:new (kernel_val) and val:original (docs_val) F1 before and after.
The load average is recorded at the start and the end: the machine is shared, and sequential rows see
whatever load it had; the F1 figures do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tempering.config.schema import NerConfig, PrepConfig  # noqa: E402
from tempering.data.ner.alignment import align_sentences  # noqa: E402
from tempering.data.ner.batches import collate  # noqa: E402
from tempering.data.ner.records import read_sentences  # noqa: E402
from tempering.tokenizer import load_tokenizer  # noqa: E402
from tempering.tokenizer.encoder_tokens import encoder_tokens  # noqa: E402
from tempering.tracking.metrics import read_metrics  # noqa: E402
from tempering.training.token_classification import entity_scores  # noqa: E402

SIZES = {"small": ["model.d_model=256", "model.n_layers=4", "model.n_heads=4", "model.d_ff=1024"],
         "distilbert": []}


def temper(*args, log: Path) -> None:
    """Run a temper command, its output into `log`; fail loudly."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ temper {' '.join(map(str, args))}\n")
        handle.flush()
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "tempering", *map(str, args)], stdout=handle, stderr=handle)
        handle.write(f"[{time.time() - started:.0f} s]\n")
    if done.returncode:
        raise SystemExit(f"temper {args[0]} failed ({done.returncode}); see {log}")


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def aligned_rows(checkpoint: Path, files: list[str], max_len: int) -> list:
    """Sentences of `files` aligned with the checkpoint's tokenizer and label ids."""
    config = json.loads((checkpoint / "config.json").read_text())
    tokenizer = load_tokenizer(checkpoint)
    sentences = read_sentences(files, NerConfig(), PrepConfig())
    aligned, refused = align_sentences(sentences, config["label2id"], tokenizer, encoder_tokens(tokenizer),
                                       max_len=max_len)
    return aligned


def entity_f1(checkpoint: Path, val: list, labels: dict) -> dict:
    """Entity scores of a checkpoint (loaded with transformers' class) on aligned validation rows."""
    import transformers

    model = transformers.AutoModelForTokenClassification.from_pretrained(checkpoint).eval()
    id2label = {int(k): v for k, v in labels.items()}
    gold, predicted = [], []
    for start in range(0, len(val), 64):
        chunk = val[start:start + 64]
        batch = collate(chunk, model.config.pad_token_id)
        mask = batch["attention_mask"]
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(batch["input_ids"]),
                           attention_mask=None if mask is None else torch.from_numpy(mask)).logits
        for row in range(len(chunk)):
            keep = batch["word_starts"][row]
            gold.append([id2label[i] for i in batch["labels"][row][keep].tolist()])
            predicted.append([id2label[i] for i in logits[row].argmax(-1).numpy()[keep].tolist()])
    return entity_scores(gold, predicted)


def tempering_throughput(run: Path) -> dict:
    """Non-pad tokens per second of training time, from a run's train records."""
    records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "train"]
    tokens, seconds, seen = 0, 0.0, None
    for record in records:
        window = record["tokens_seen"] - (seen if seen is not None else 0)
        seen = record["tokens_seen"]
        tokens += window
        seconds += window / record["tokens_per_s"]
    return {"tokens": tokens, "train_s": seconds, "tokens_per_s": tokens / seconds}


def hf_row(init: Path, rows: list, work: Path, args, group_by_length: bool, max_steps: int = -1,
           output: Path | None = None, seed: int = 1337) -> dict:
    """Train the HF row in its own process; return its result (tokens, runtime, tokens/s, load)."""
    output = output or work / ("hf-grouped" if group_by_length else "hf-default")
    output.mkdir(parents=True, exist_ok=True)
    train_file = output / "rows.jsonl"
    train_file.write_text("".join(json.dumps({"input_ids": r.input_ids.tolist(), "labels": r.labels.tolist()}) + "\n"
                                  for r in rows))
    spec = {"init": str(init), "train": str(train_file), "output": str(output), "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps, "weight_decay": 0.0,
            "adam_beta2": 0.999, "seed": seed, "group_by_length": group_by_length, "max_steps": max_steps}
    (output / "spec.json").write_text(json.dumps(spec))
    load_before = load_average()
    with open(work / "log.txt", "a") as log:
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "peers" / "hf_ner.py"), str(output / "spec.json")],
                       check=True, stdout=log, stderr=log)
    result = json.loads((output / "result.json").read_text())
    result["tokens_per_s"] = result["tokens"] / result["train_runtime_s"]
    result["load"] = [round(load_before, 1), round(load_average(), 1)]
    return result


def val_f1(run: Path, split: str) -> tuple[float, float]:
    """F1 of a split at the run's first and last evaluation."""
    records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == split]
    return records[0]["f1"], records[-1]["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ner"),
                        help="Folder of docs_train/docs_val/kernel_train/kernel_val .jsonl.gz (the shared NER data).")
    parser.add_argument("--text", default=str(REPO.parent / "shared" / "data" / "text"),
                        help="Folder holding pydocs_train.jsonl.gz: the tokenizer's and MLM backbone's text.")
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "results" / "ner_work"),
                        help="Working folder: tokenizer, shards, backbone and every run (reused when present).")
    parser.add_argument("--size", choices=list(SIZES), default="small",
                        help="Backbone width: small = 4 x 256 (FFN 1024), distilbert = 6 x 768.")
    parser.add_argument("--backbone-steps", type=int, default=600, help="MLM pretraining steps of the backbone.")
    parser.add_argument("--epochs", type=int, default=2, help="Fine-tuning epochs over docs_train (both sides).")
    parser.add_argument("--batch-size", type=int, default=32, help="Sentences per batch (both sides).")
    parser.add_argument("--lr", type=float, default=2e-4, help="Peak learning rate (both sides; cosine to 0).")
    parser.add_argument("--warmup-steps", type=int, default=50, help="Linear warm-up steps (both sides).")
    parser.add_argument("--continued-epochs", type=int, default=1, help="Epochs of the docs -> kernel continued runs.")
    parser.add_argument("--throughput-rounds", type=int, default=3,
                        help="Rounds of short runs, the rows in turn (Tempering, HF, HF grouped), for the speed ratio.")
    parser.add_argument("--throughput-steps", type=int, default=60, help="Training steps of each row in each round.")
    parser.add_argument("--only-throughput", action="store_true", help="Reuse --work's starting point; rounds only.")
    parser.add_argument("--only-continued", metavar="DOCS_RUN",
                        help="Only the continued-training rows, from this finished docs fine-tune (a run dir).")
    parser.add_argument("--f1-seeds", metavar="S,S,...",
                        help="Also fine-tune both rows (Tempering, HF defaults) once per seed and report the F1 "
                             "spread: seed changes data order and dropout, never the initial weights.")
    parser.add_argument("--f1-batching", choices=("mixed", "grouped", "random"), default="mixed",
                        help="The --f1-seeds rows' batches: mixed = each side's default (Tempering grouped by "
                             "length, HF random); grouped or random = both sides alike.")
    parser.add_argument("--only-f1-seeds", action="store_true",
                        help="Reuse --work's starting point; only the --f1-seeds rows.")
    parser.add_argument("--smoke", action="store_true", help="A few hundred sentences and steps: checks the plumbing.")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ner_vs_hf.json"),
                        help="Where the JSON report goes (a Markdown summary is printed too).")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    data = Path(args.data)
    files = {name: str(data / f"{name}.jsonl.gz") for name in ("docs_train", "docs_val", "kernel_train", "kernel_val")}
    if args.smoke:
        files = _smoke_files(files, work)
        args.backbone_steps, args.epochs, args.continued_epochs, args.warmup_steps = 20, 1, 1, 5
    report = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__}, "load_at_start": load_average(),
              "settings": {k: v for k, v in vars(args).items() if k not in ("data", "text", "work", "out")}}
    if args.only_continued:
        report["continued"] = continued_training(Path(args.only_continued), files, args, work, log)
        _write(report, args)
        return
    shards, tok = work / "shards", work / "tok"
    if not (tok / "tokenizer.json").exists():
        temper("tokenizer", "train", "--input", Path(args.text) / "pydocs_train.jsonl.gz", "--vocab-size", 8192,
               "--output", tok, "--overwrite", log=log)
    if not (shards / "manifest.json").exists():
        temper("prep", "--input", Path(args.text) / "pydocs_train.jsonl.gz", "--tokenizer", tok, "--output", shards,
               "--val-fraction", 0.02, log=log)
    backbone = work / "backbone"
    temper("pretrain", "--preset", "distilbert", *SIZES[args.size], "--objective", "mlm", "--data", shards,
           "--tokenizer", tok, "--save-dir", backbone, "--seq-len", 128, "--batch-size", 32, "--max-steps",
           args.backbone_steps, "--lr", "5e-4", "--warmup-steps", 50, "--eval-steps", args.backbone_steps,
           "training.eval_max_batches=10", log=log)
    init = work / "init"
    common = ["--batch-size", args.batch_size, "training.adam_beta2=0.999", "--wd", 0, "training.min_lr_ratio=0",
              "--precision", "fp32",  # the comparison is fp32 (precision auto would pick bf16 on AMX CPUs)
              "model.dropout=0.1", "--seq-len", 256]
    temper("post-train", "--task", "ner", "--checkpoint", backbone, "--new-dataset", files["docs_train"],
           "--val-data", files["docs_val"], "--save-dir", init, "--max-steps", 1, "--lr", 0, *common, log=log)
    start = init / "final"
    rows = aligned_rows(start, [files["docs_train"]], 256)
    if args.only_throughput:
        report["throughput_rounds"] = throughput_rounds(start, rows, files, common, work, args, log)
        _write(report, args)
        return
    if args.only_f1_seeds:
        report["f1_seeds"] = f1_over_seeds(start, rows, files, common, work, args, log)
        _write(report, args)
        return

    ours = work / "tempering"
    load_before = load_average()
    temper("post-train", "--task", "ner", "--checkpoint", start, "--reset-optimizer", "--reset-scheduler",
           "--reset-step", "--new-dataset", files["docs_train"], "--val-data", files["docs_val"], "--save-dir", ours,
           "--epochs", args.epochs, "--lr", args.lr, "--warmup-steps", args.warmup_steps, *common, log=log)
    val = aligned_rows(start, [files["docs_val"]], 256)
    labels = json.loads((start / "config.json").read_text())["id2label"]
    report["tempering"] = {**tempering_throughput(ours), "load": [round(load_before, 1), round(load_average(), 1)],
                           **_scores(entity_f1(ours / "final", val, labels))}
    for grouped in (False, True):
        name = "hf_trainer_grouped" if grouped else "hf_trainer"
        result = hf_row(start, rows, work, args, grouped)
        report[name] = {**result, **_scores(entity_f1(Path(result_dir(work, grouped)) / "final", val, labels))}
        report[name]["tempering_speedup"] = report["tempering"]["tokens_per_s"] / result["tokens_per_s"]
        report[name]["f1_difference_points"] = 100 * (report["tempering"]["f1"] - report[name]["f1"])
    report["continued"] = continued_training(ours, files, args, work, log)
    if args.f1_seeds:
        report["f1_seeds"] = f1_over_seeds(start, rows, files, common, work, args, log)
    if args.throughput_rounds:
        report["throughput_rounds"] = throughput_rounds(start, rows, files, common, work, args, log)
    _write(report, args)


def _write(report: dict, args) -> None:
    report["load_at_end"] = load_average()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown(report))


def throughput_rounds(start: Path, rows: list, files: dict, common: list, work: Path, args, log: Path) -> dict:
    """Short runs of the three rows in turn, --throughput-rounds times: tokens/s each, ratios per round."""
    rounds = []
    for index in range(args.throughput_rounds):
        run = work / f"speed-{index}"
        load = load_average()
        temper("post-train", "--task", "ner", "--checkpoint", start, "--reset-optimizer", "--reset-scheduler",
               "--reset-step", "--new-dataset", files["docs_train"], "--val-data", files["docs_val"], "--save-dir",
               run, "--max-steps", args.throughput_steps, "--lr", args.lr, "--warmup-steps", args.warmup_steps,
               "training.eval_max_batches=1", "--restart", *common, log=log)
        ours = {**tempering_throughput(run), "load": round(load, 1)}
        temper("post-train", "--task", "ner", "--checkpoint", start, "--reset-optimizer", "--reset-scheduler",
               "--reset-step", "--new-dataset", files["docs_train"], "--val-data", files["docs_val"], "--save-dir",
               run.with_name(run.name + "-random"), "--max-steps", args.throughput_steps, "--lr", args.lr,
               "--warmup-steps", args.warmup_steps, "training.eval_max_batches=1", "ner.group_by_length=false",
               "--restart", *common, log=log)
        ours_random = tempering_throughput(run.with_name(run.name + "-random"))
        default = hf_row(start, rows, work, args, False, args.throughput_steps, work / f"speed-{index}-hf")
        grouped = hf_row(start, rows, work, args, True, args.throughput_steps, work / f"speed-{index}-hf-grouped")
        rounds.append({"tempering": ours, "tempering_random": ours_random, "hf_trainer": default,
                       "hf_trainer_grouped": grouped, "vs_hf": ours["tokens_per_s"] / default["tokens_per_s"],
                       "random_vs_hf": ours_random["tokens_per_s"] / default["tokens_per_s"],
                       "vs_hf_grouped": ours["tokens_per_s"] / grouped["tokens_per_s"]})
    median = statistics.median
    return {"rounds": rounds, "steps": args.throughput_steps,
            "median_tokens_per_s": {name: median(r[name]["tokens_per_s"] for r in rounds)
                                    for name in ("tempering", "tempering_random", "hf_trainer",
                                                 "hf_trainer_grouped")},
            "median_vs_hf": median(r["vs_hf"] for r in rounds),
            "median_random_vs_hf": median(r["random_vs_hf"] for r in rounds),
            "median_vs_hf_grouped": median(r["vs_hf_grouped"] for r in rounds)}


def f1_over_seeds(start: Path, rows: list, files: dict, common: list, work: Path, args, log: Path) -> dict:
    """Both rows fine-tuned from the same start once per seed: docs_val F1 each, mean, spread, mean gap."""
    seeds = [int(seed) for seed in (args.f1_seeds or "1337").split(",")]
    val = aligned_rows(start, [files["docs_val"]], 256)
    labels = json.loads((start / "config.json").read_text())["id2label"]
    ours_grouped, hf_grouped = {"mixed": (True, False), "grouped": (True, True), "random": (False, False)}[
        args.f1_batching]
    suffix = "" if args.f1_batching == "mixed" else f"-{args.f1_batching}"
    per_seed = {}
    for seed in seeds:
        run, hf_dir = work / f"tempering-seed-{seed}{suffix}", work / f"hf-seed-{seed}{suffix}"
        temper("post-train", "--task", "ner", "--checkpoint", start, "--reset-optimizer", "--reset-scheduler",
               "--reset-step", "--new-dataset", files["docs_train"], "--val-data", files["docs_val"], "--save-dir",
               run, "--epochs", args.epochs, "--lr", args.lr, "--warmup-steps", args.warmup_steps, "--seed", seed,
               f"ner.group_by_length={str(ours_grouped).lower()}", "--restart", *common, log=log)
        hf = hf_row(start, rows, work, args, hf_grouped, output=hf_dir, seed=seed)
        per_seed[seed] = {"tempering": entity_f1(run / "final", val, labels)["f1"],
                          "hf_trainer": entity_f1(hf_dir / "final", val, labels)["f1"],
                          "hf_tokens_per_s": hf["tokens_per_s"]}
    summary = {}
    for name in ("tempering", "hf_trainer"):
        values = [row[name] for row in per_seed.values()]
        summary[name] = {"mean": statistics.mean(values),
                         "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
    gaps = [100 * (row["tempering"] - row["hf_trainer"]) for row in per_seed.values()]
    return {"batching": args.f1_batching, "seeds": per_seed, "summary": summary, "mean_gap_points": statistics.mean(gaps),
            "gap_points_per_seed": gaps}


def result_dir(work: Path, grouped: bool) -> Path:
    return work / ("hf-grouped" if grouped else "hf-default")


def continued_training(docs_run: Path, files: dict, args, work: Path, log: Path) -> dict:
    """docs → kernel with `combined` and `new_only`: val:new / val:original F1 before and after."""
    results = {}
    for strategy in ("combined", "new_only"):
        run = work / f"continued-{strategy}"
        old = ["--old-dataset", files["docs_train"]] if strategy == "combined" else []
        temper("post-train", "--checkpoint", docs_run, "--select", "final", "--new-dataset", files["kernel_train"],
               "--val-data", files["kernel_val"], *old, "--strategy", strategy, "ner.label_mapping=merge",
               "--reset-optimizer", "--reset-scheduler", "--save-dir", run, "--epochs", args.continued_epochs,
               "--lr", args.lr / 3, "--warmup-steps", args.warmup_steps, "--batch-size", args.batch_size,
               "training.adam_beta2=0.999", "--wd", 0, "training.min_lr_ratio=0", "--seq-len", 256, log=log)
        new, original = val_f1(run, "val:new"), val_f1(run, "val:original")
        results[strategy] = {"val_new_f1": list(new), "val_original_f1": list(original),
                             "val_original_change_points": 100 * (original[1] - original[0])}
    return results


def _scores(scores: dict) -> dict:
    return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}


def _smoke_files(files: dict, work: Path) -> dict:
    """The first few hundred rows of each file."""
    import gzip

    small = {}
    for name, path in files.items():
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()[:300 if "train" in name else 60]
        small[name] = str(work / f"{name}.jsonl")
        Path(small[name]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return small


def markdown(report: dict) -> str:
    """The tables docs/performance.md shows."""
    lines = _speed_table(report.get("throughput_rounds")) + _seeds_table(report.get("f1_seeds"))
    if "tempering" not in report:
        return "\n".join(lines)
    t = report["tempering"]
    lines += ["", "| row (full fine-tune) | docs_val entity F1 | tokens/s (training) | Tempering's speed-up | "
              "load (start, end) |", "|---|---|---|---|---|",
             f"| `temper post-train --task ner` | {100 * t['f1']:.2f} | {t['tokens_per_s']:,.0f} | 1.00× | "
             f"{t['load'][0]}, {t['load'][1]} |"]
    for name, label in (("hf_trainer", "HF `Trainer` (defaults)"),
                        ("hf_trainer_grouped", "HF `Trainer`, `group_by_length=True`")):
        row = report[name]
        lines.append(f"| {label} | {100 * row['f1']:.2f} ({row['f1_difference_points']:+.2f} pts to us) | "
                     f"{row['tokens_per_s']:,.0f} | **{row['tempering_speedup']:.2f}×** | {row['load'][0]}, "
                     f"{row['load'][1]} |")
    lines += ["", "| continued docs → kernel | val:new F1 before → after | val:original F1 before → after |",
              "|---|---|---|"]
    for strategy, row in report["continued"].items():
        new, original = row["val_new_f1"], row["val_original_f1"]
        lines.append(f"| `{strategy}` | {100 * new[0]:.2f} → {100 * new[1]:.2f} | {100 * original[0]:.2f} → "
                     f"{100 * original[1]:.2f} ({row['val_original_change_points']:+.2f} pts) |")
    return "\n".join(lines)


def _seeds_table(seeds: dict | None) -> list[str]:
    if not seeds:
        return []
    lines = ["", f"Batches: {seeds.get('batching', 'mixed')}.", "",
             "| seed | Tempering docs_val F1 | HF `Trainer` docs_val F1 | gap (points) |", "|---|---|---|---|"]
    for (seed, row), gap in zip(seeds["seeds"].items(), seeds["gap_points_per_seed"], strict=True):
        lines.append(f"| {seed} | {100 * row['tempering']:.2f} | {100 * row['hf_trainer']:.2f} | {gap:+.2f} |")
    ours, hf = seeds["summary"]["tempering"], seeds["summary"]["hf_trainer"]
    lines.append(f"| mean ± sd | {100 * ours['mean']:.2f} ± {100 * ours['stdev']:.2f} | "
                 f"{100 * hf['mean']:.2f} ± {100 * hf['stdev']:.2f} | **{seeds['mean_gap_points']:+.2f}** |")
    return lines


def _speed_table(speed: dict | None) -> list[str]:
    if not speed:
        return []
    rounds = speed["rounds"]
    lines = [f"| row ({speed['steps']} steps, {len(rounds)} rounds in turn) | tokens/s per round | median | "
             "ratio (median of rounds) |", "|---|---|---|---|"]
    for name, label, ratio in (("tempering", "`temper post-train --task ner` (grouped by length)", None),
                               ("tempering_random", "`temper post-train --task ner`, `ner.group_by_length=false`",
                                "median_random_vs_hf"),
                               ("hf_trainer", "HF `Trainer` (defaults)", "median_vs_hf"),
                               ("hf_trainer_grouped", "HF `Trainer`, `group_by_length=True`", "median_vs_hf_grouped")):
        values = ", ".join(f"{r[name]['tokens_per_s']:,.0f}" for r in rounds)
        lines.append(f"| {label} | {values} | {speed['median_tokens_per_s'][name]:,.0f} | "
                     + (f"**{speed[ratio]:.2f}×** |" if ratio else "1.00× |"))
    loads = ", ".join(str(r["tempering"]["load"]) for r in rounds)
    return lines + ["", "Ratios: an HF row's is Tempering (grouped) ÷ that row; the random row's is it ÷ HF defaults "
                        "(both draw batches at random).", f"Load average at the start of each round: {loads}."]


if __name__ == "__main__":
    main()

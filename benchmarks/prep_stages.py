"""`temper prep` with every corpus stage on: MB/s beside bare tokenization, and peak RSS on 1x and 8x the corpus.

    python benchmarks/prep_stages.py [--copies 8] [--workdir DIR] [--out prep_stages.json] [--without-perplexity]

Corpus: the shared prose corpus (../shared/data/text: Python docs and kernel docs, train
files, ~38 MB of text) written as two JSONL sources, `pydocs` and `kerneldocs`. The 8x corpus
holds each document 8 times, each copy ending in its own marker line, so exact dedup keeps
them all and the near-dedup stage has to find them (and memory has to cope with 8x the
documents in every pass).

Rows (each `temper prep` a separate process; wall time and peak RSS from wait4):
  bare tokenization   `Tokenizer.encode_batch_fast` over the 1x documents already in memory;
  prep                `temper prep` with no stage on (read, NFC, exact dedup, tokenize, write);
  prep, every stage   chunking (2,000 chars), quality rules, near-dedup with --verify-jaccard,
                      perplexity filter (keep 0:90, first 128 tokens, a `tiny` checkpoint trained
                      here for 30 steps), --dataset-limit kerneldocs=20000, --max-source-fraction 0.8,
                      --workers 2 — on 1x and on 8x.
MB is UTF-8 input text (what prep reports). The tokenizer (8,192 tokens) and the checkpoint are
built from the built-in sample corpus and cached in --workdir.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = REPO_ROOT.parent / "shared" / "data" / "text"
SOURCES = {"pydocs": "pydocs_train.jsonl.gz", "kerneldocs": "kerneldocs_train.jsonl.gz"}
STAGE_FLAGS = ["--chunk-size", "2000", "--quality-filter", "--near-dedup", "--verify-jaccard", "--ppl-keep", "0:90",
               "--ppl-max-tokens", "128", "--dataset-limit", "kerneldocs=20000", "--max-source-fraction", "0.8",
               "--workers", "2"]


def main() -> None:
    """Build the inputs, run every row, print a Markdown table, write JSON."""
    args = parse_args()
    if not SHARED_TEXT.is_dir():
        sys.exit(f"{SHARED_TEXT} not found: this benchmark needs the shared prose corpus")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="prep-stages-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer, checkpoint = prepare_model(work)
    corpus_1x, corpus_8x = write_corpus(work / "x1", 1), write_corpus(work / "x8", args.copies)
    results = {"machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
               "stage_flags": STAGE_FLAGS, "copies": args.copies, "rows": {}}
    results["rows"]["bare tokenization (1x)"] = bare_tokenization(corpus_1x, tokenizer)
    stage_flags = [*STAGE_FLAGS, "--ppl-model", str(checkpoint)]
    every = "every stage"
    if args.without_perplexity:  # the memory check in a fraction of the time: scoring dominates, and is 1x for both
        ppl = {i for i, flag in enumerate(STAGE_FLAGS) if flag.startswith("--ppl")}
        stage_flags = [flag for i, flag in enumerate(STAGE_FLAGS) if i not in ppl and i - 1 not in ppl]
        every = "every stage but perplexity"
    results["every"] = every
    for name, corpus, flags in (("prep (1x)", corpus_1x, []), (f"prep, {every} (1x)", corpus_1x, stage_flags),
                                (f"prep, {every} ({args.copies}x)", corpus_8x, stage_flags)):
        results["rows"][name] = run_prep(corpus, tokenizer, work / "out" / name.replace(" ", "_"), flags)
        print(f"{name}: {results['rows'][name]['wall_s']:.1f} s", file=sys.stderr)
    print(markdown(results))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--workdir", help="Cache the tokenizer, checkpoint and corpora here (default: a new temp dir).")
    parser.add_argument("--without-perplexity", action="store_true",
                        help="Leave out the perplexity stage (the memory comparison without the slowest stage).")
    parser.add_argument("--out", default="prep_stages.json")
    return parser.parse_args()


def temper(*args: str) -> None:
    """Run `python -m tempering ARGS`, failing loudly."""
    subprocess.run([sys.executable, "-m", "tempering", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def prepare_model(work: Path) -> tuple[Path, Path]:
    """An 8,192-token tokenizer and a `tiny` checkpoint trained for 30 steps on the sample prose."""
    tokenizer, run = work / "tok", work / "tiny-run"
    if not (run / "final").is_dir():
        temper("sample-corpus", "--output", work / "sample")
        if not tokenizer.is_dir():
            temper("tokenizer", "train", "--input", work / "sample" / "prose" / "train.jsonl", "--vocab-size", 8192,
                   "--output", tokenizer)
        temper("prep", "--input", work / "sample" / "prose", "--tokenizer", tokenizer, "--output", work / "shards",
               "--val-fraction", 0.05, "--seq-len", 128)
        temper("pretrain", "--data", work / "shards", "--tokenizer", tokenizer, "--save-dir", run, "--preset", "tiny",
               "--seq-len", 128, "--batch-size", 8, "--lr", "3e-3", "--warmup-steps", 3, "--max-steps", 30,
               "training.eval_max_batches=2")
    return tokenizer, run


def write_corpus(directory: Path, copies: int) -> Path:
    """The prose corpus as one folder (source) per corpus, each document `copies` times (copies marked)."""
    if directory.is_dir():
        return directory
    directory.mkdir(parents=True)
    for source, name in SOURCES.items():
        with gzip.open(SHARED_TEXT / name, "rt", encoding="utf-8") as file:
            texts = [json.loads(line)["text"] for line in file]
        (directory / source).mkdir()
        with open(directory / source / "train.jsonl", "w", encoding="utf-8") as out:
            for copy in range(copies):
                for text in texts:
                    marked = text if copy == 0 else f"{text}\n\n(copy {copy})"
                    out.write(json.dumps({"text": marked}) + "\n")
    return directory


def bare_tokenization(corpus: Path, tokenizer_dir: Path) -> dict:
    """encode_batch_fast over the documents in memory, in batches of 1,000."""
    texts = [json.loads(line)["text"] for path in sorted(corpus.glob("*/*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    started, cpu = time.perf_counter(), time.process_time()
    num_tokens = 0
    for start in range(0, len(texts), 1000):
        num_tokens += sum(len(e.ids) for e in tokenizer.encode_batch_fast(texts[start:start + 1000],
                                                                          add_special_tokens=False))
    wall = time.perf_counter() - started
    num_mb = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    return {"mb": round(num_mb, 2), "wall_s": round(wall, 2), "mb_per_s": round(num_mb / wall, 3),
            "cpu_s": round(time.process_time() - cpu, 2), "tokens": num_tokens, "peak_rss_mb": None}


# Runs a command, its output to stderr, then prints its CPU time and peak RSS (wait4) as JSON.
LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=sys.stderr)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_prep(corpus: Path, tokenizer: Path, output: Path, flags: list[str]) -> dict:
    """One `temper prep` process: wall time, peak RSS (wait4), and what its manifest says."""
    summary_file = output.parent / f"{output.name}.summary.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    command = [sys.executable, "-m", "tempering", "prep", "--input", str(corpus), "--tokenizer", str(tokenizer),
               "--output", str(output), *flags]
    with open(summary_file, "w") as log:
        # Started through a small launcher: a child forked from this (large) process would report
        # this process's RSS as its own peak (Linux folds the forked copy's high-water mark in at exec).
        launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], stdout=subprocess.PIPE, stderr=log,
                                  env={**os.environ, "COLUMNS": "160"}, text=True)
    wall = time.perf_counter() - started
    if launched.returncode != 0:
        sys.exit(f"temper prep failed ({launched.returncode}); see {summary_file}")
    usage = json.loads(launched.stdout.strip().splitlines()[-1])
    manifest = json.loads((output / "manifest.json").read_text())
    num_mb = manifest["cleaning"]["num_text_bytes"] / 1e6
    tokens = sum(manifest["splits"][split]["num_tokens"] for split in ("train", "val"))
    return {"mb": round(num_mb, 2), "wall_s": round(wall, 2), "mb_per_s": round(num_mb / wall, 3),
            "cpu_s": round(usage["cpu_s"], 2), "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
            "tokens_written": tokens, "load_before": round(load_before, 2), "report": str(summary_file),
            "pass_seconds": _pass_seconds(summary_file.read_text()),
            "stages": {stage: {source: counts["documents_out"] for source, counts in report["sources"].items()}
                       for stage, report in manifest["cleaning"]["stages"].items()}}


def _pass_seconds(report: str) -> str | None:
    """The "per pass s" line of prep's printed summary."""
    for line in report.splitlines():
        if "per pass s" in line:
            return line.split("per pass s", 1)[1].strip(" │|")
    return None


def markdown(results: dict) -> str:
    """The rows as a Markdown table, with the RSS ratio of 8x to 1x."""
    rows = results["rows"]
    bare = rows["bare tokenization (1x)"]["mb_per_s"]
    lines = ["| row | input MB | wall s | MB/s | s per MB | x bare tokenization time | CPU s | peak RSS MB | per pass s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        rss = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:,.0f}"
        lines.append(f"| {name} | {row['mb']:,.1f} | {row['wall_s']:,.1f} | {row['mb_per_s']:.2f} | "
                     f"{1 / row['mb_per_s']:.2f} | {bare / row['mb_per_s']:.1f} | {row['cpu_s']:,.1f} | {rss} | "
                     f"{row.get('pass_seconds') or '-'} |")
    every = results.get("every", "every stage")
    one, many = rows[f"prep, {every} (1x)"], rows[f"prep, {every} ({results['copies']}x)"]
    lines.append(f"\nPeak RSS {results['copies']}x / 1x with {every} on: "
                 f"{many['peak_rss_mb'] / one['peak_rss_mb']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Throughput of `temper prep` against a bare `tokenizers` encode over the same texts, in one run.

    python benchmarks/prep_throughput.py [--corpus sample|shared|all] [--vocab 8192] [--rounds 3]
                                         [--workdir DIR] [--out results.json]

For each corpus, alternating for several rounds (medians reported):
  (a) bare `Tokenizer.encode_batch` over the kept documents, already in memory, in batches
      of `prep.batch_size` (what a user's own loop would do); also `encode_batch_fast`;
  (b) the whole `run_prep`: discover, hash, read, decode, clean, dedup, tokenize, pack, write.
Reports MB/s of input text (UTF-8 bytes of the documents read), tokens/s, and the ratio of
(b)'s throughput to (a)'s: by median and by best wall time, and by CPU seconds (all threads),
which other load on a shared machine barely moves. Corpora: `sample` = the built-in sample corpus (Python install);
`shared` = ../shared/data/text/*.jsonl.gz relative to the repo root, when present.
The tokenizer is trained once on the sample corpus and reused from --workdir.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

from tempering.config.schema import PrepConfig
from tempering.data.cleaning import DocumentCleaner
from tempering.data.prep import run_prep
from tempering.data.sample_corpus import write_sample_corpus
from tempering.data.sources import SourceStats, discover_files, iter_documents
from tempering.tokenizer import train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = REPO_ROOT.parent / "shared" / "data" / "text"
METHODS = ("encode_batch", "encode_batch_fast", "prep")


def main() -> None:
    """Run the benchmark, print a Markdown table, write the JSON results."""
    args = parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="prep-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sample_dir = workdir / "sample"
    if not sample_dir.exists():
        write_sample_corpus(sample_dir)
    tokenizer_dir = workdir / f"tokenizer-{args.vocab}"
    if not tokenizer_dir.exists():
        texts = [text for text, _ in kept_documents(discover_files([str(sample_dir)]), PrepConfig())]
        train_tokenizer(texts, args.vocab, tokenizer_dir, show_progress=False)
    corpora = {"sample": [str(sample_dir)]}
    if SHARED_TEXT.is_dir():
        corpora["shared"] = sorted(str(path) for path in SHARED_TEXT.glob("*.jsonl.gz"))
    chosen = list(corpora) if args.corpus == "all" else [args.corpus]
    if any(name not in corpora for name in chosen):
        sys.exit(f"corpus {args.corpus!r} is not available here (have: {', '.join(corpora)})")
    results = {"machine": machine_info(), "vocab_size": args.vocab, "rounds": args.rounds, "corpora": {}}
    for name in chosen:
        results["corpora"][name] = measure(corpora[name], tokenizer_dir, workdir / f"out-{name}", args.rounds)
        print(f"{name}: done", file=sys.stderr)
    print(markdown_table(results))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["sample", "shared", "all"], default="all")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", help="Reuse the sample corpus and tokenizer here (default: a new temp dir).")
    parser.add_argument("--out", default="prep_throughput.json")
    return parser.parse_args()


def kept_documents(files: list[Path], options: PrepConfig) -> list[tuple[str, int]]:
    """The documents prep keeps (read, NFC, deduplicated), with their UTF-8 sizes."""
    cleaner = DocumentCleaner(dedup=options.dedup)
    kept = []
    for text in iter_documents(files, options, SourceStats()):
        cleaned = cleaner.clean(text)
        if cleaned is not None:
            kept.append((cleaned[0], len(cleaned[0].encode("utf-8"))))
    return kept


def measure(inputs: list[str], tokenizer_dir: Path, output: Path, rounds: int) -> dict:
    """Alternate bare encode_batch, encode_batch_fast and run_prep for `rounds`; return medians."""
    options = PrepConfig(val_fraction=0.05)
    documents = kept_documents(discover_files(inputs), options)
    texts = [text for text, _ in documents]
    num_bytes = sum(size for _, size in documents)
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    wall: dict[str, list[float]] = {method: [] for method in METHODS}
    cpu: dict[str, list[float]] = {method: [] for method in METHODS}
    num_tokens = 0
    for _ in range(rounds):
        for method in ("encode_batch", "encode_batch_fast"):
            encode = getattr(tokenizer, method)
            with timed(wall[method], cpu[method]):
                num_tokens = sum(len(encoding) for start in range(0, len(texts), options.batch_size)
                                 for encoding in encode(texts[start:start + options.batch_size]))
        shutil.rmtree(output, ignore_errors=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                timed(wall["prep"], cpu["prep"]):
            summary = run_prep(inputs, tokenizer_dir, output, options)
    # Differs from `tokens` only where a text spells a special token (prep keeps it as plain text).
    prep_tokens = summary["train"]["tokens"] + summary["val"]["tokens"] - summary["documents_kept"]
    result = {"documents": len(texts), "text_mb": num_bytes / 1e6, "tokens": num_tokens,
              "prep_tokens_without_eos": prep_tokens}
    for method in METHODS:
        median_s, min_s = statistics.median(wall[method]), min(wall[method])
        result[method] = {"median_s": median_s, "min_s": min_s, "wall_s": wall[method], "cpu_s": cpu[method],
                          "mb_per_s": num_bytes / 1e6 / median_s, "tokens_per_s": num_tokens / median_s}
    for baseline in ("encode_batch", "encode_batch_fast"):
        result[f"prep_vs_{baseline}"] = {
            "median": result[baseline]["median_s"] / result["prep"]["median_s"],
            "min": result[baseline]["min_s"] / result["prep"]["min_s"],
            # CPU seconds spent, all threads: insensitive to other load on the machine.
            "cpu": statistics.median(cpu[baseline]) / statistics.median(cpu["prep"]),
        }
    return result


@contextlib.contextmanager
def timed(wall_s: list[float], cpu_s: list[float]):
    """Append the block's wall time and process CPU time (all threads) to the lists."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    yield
    wall_s.append(time.perf_counter() - wall_start)
    cpu_s.append(time.process_time() - cpu_start)


def machine_info() -> dict:
    """What the numbers were measured on."""
    return {"python": platform.python_version(), "tokenizers": tokenizers.__version__,
            "cpu_count": os.cpu_count(), "platform": platform.platform()}


def markdown_table(results: dict) -> str:
    """One row per corpus: sizes, median MB/s of each method, and prep's ratios (median, min, CPU)."""
    lines = ["| corpus | text MB | tokens | encode_batch MB/s | encode_batch_fast MB/s | prep MB/s | prep tok/s "
             "| prep / encode_batch (median, min, cpu) | prep / encode_batch_fast (median, min, cpu) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["corpora"].items():
        ratios = [" / ".join(f"{r[key][kind]:.2f}" for kind in ("median", "min", "cpu"))
                  for key in ("prep_vs_encode_batch", "prep_vs_encode_batch_fast")]
        lines.append(f"| {name} | {r['text_mb']:.1f} | {r['tokens']:,} | {r['encode_batch']['mb_per_s']:.2f} "
                     f"| {r['encode_batch_fast']['mb_per_s']:.2f} | {r['prep']['mb_per_s']:.2f} "
                     f"| {r['prep']['tokens_per_s']:,.0f} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

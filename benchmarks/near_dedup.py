"""Near-duplicate removal: accuracy on planted near-copies, and throughput against datatrove and datasketch.

    python benchmarks/near_dedup.py accuracy   [--originals 3000 --copies 1500]
    python benchmarks/near_dedup.py throughput [--originals 3000 --copies 1500 --rounds 3]

accuracy: originals are ~2,000-character chunks of the shared prose corpus (../shared/data/text,
Python and kernel docs); each of `--copies` of them gets a mutated copy — word insertions,
deletions and substitutions at a random rate, and half of them a paragraph (or sentence) moved —
so that copies spread over shingle Jaccard 0.5-1.0. The corpus is shuffled. Ground truth: the
exact Jaccard of the word 5-gram shingle sets (what the threshold means), computed for every
planted pair and for every pair a very permissive LSH (56 bands x 2 rows) proposes, so natural
near-duplicates among the originals count too; the true removals are what keep-first clustering
of the pairs at or above the threshold removes. Reported: precision and recall of the removed
documents for `temper prep --near-dedup` at threshold 0.8, with and without --verify-jaccard, and
per Jaccard bin the share of planted pairs that end up in one cluster.

throughput: the same documents (the planted corpus above: `--originals` + `--copies` chunks)
through, alternating for `--rounds` rounds on one core (medians reported):
  tempering   signatures (near_dedup.band_hashes), LSH pairs and clusters, in-process (workers=1);
  datasketch  MinHash.update per shingle (same shingles: our normalised word 5-grams), MinHashLSH
              insert + query, union-find; and the same with MinHash.update_batch (its faster path);
  datatrove   MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster under
              LocalPipelineExecutor (tasks 1 / bands / 1, one worker), with its default English
              word tokenizer (spaCy) and with a plain whitespace tokenizer (its fastest setting).
All with the same permutations and bands (14 x 8 = 112: the bands --verify-jaccard derives for
0.8). Rows whose package is missing say so. Writes JSON (--out) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tempering.data.chunking import chunk_text
from tempering.data.near_dedup import (
    VERIFY_PARTNERS,
    MinHashParams,
    NearDedupIndex,
    band_hashes,
    candidate_probability,
    connected_components,
    derive_bands,
    exact_jaccard,
    normalise_for_shingles,
    shingle_hashes,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = REPO_ROOT.parent / "shared" / "data" / "text"
PROSE_FILES = ("pydocs_train.jsonl.gz", "kerneldocs_train.jsonl.gz")
THRESHOLD = 0.8
BINS = np.round(np.arange(0.5, 1.0001, 0.05), 2)


def main() -> None:
    """Run the chosen benchmark, print Markdown, write JSON."""
    args = parse_args()
    if not SHARED_TEXT.is_dir():
        sys.exit(f"{SHARED_TEXT} not found: this benchmark needs the shared prose corpus")
    results = {"machine": machine_info()}
    if args.mode in ("accuracy", "all"):
        results["accuracy"] = measure_accuracy(args.originals, args.copies, args.seed)
        print(accuracy_markdown(results["accuracy"]))
    if args.mode in ("throughput", "all"):
        results["throughput"] = measure_throughput(args.originals, args.copies, args.seed, args.rounds)
        print(throughput_markdown(results["throughput"]))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["accuracy", "throughput", "all"])
    parser.add_argument("--originals", type=int, default=3000)
    parser.add_argument("--copies", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="near_dedup.json")
    return parser.parse_args()


def machine_info() -> dict:
    """Where the numbers were measured, and how busy the machine was."""
    return {"cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "numpy": np.__version__}


def prose_documents(limit_chars: float | None = None) -> list[str]:
    """The shared prose corpus's train documents, in file order (up to `limit_chars` characters)."""
    texts, total = [], 0
    for name in PROSE_FILES:
        with gzip.open(SHARED_TEXT / name, "rt", encoding="utf-8") as file:
            for line in file:
                text = json.loads(line)["text"]
                texts.append(text)
                total += len(text)
                if limit_chars is not None and total >= limit_chars:
                    return texts
    return texts


# ---------------------------------------------------------------- accuracy


def mutate(text: str, rate: float, vocabulary: list[str], rng: random.Random) -> str:
    """A copy of `text` with a share `rate` of its words inserted, deleted or substituted, maybe a block moved."""
    if rng.random() < 0.5:
        blocks = text.split("\n\n") if text.count("\n\n") >= 2 else text.split(". ")
        if len(blocks) >= 3:
            moved = blocks.pop(rng.randrange(len(blocks)))
            blocks.insert(rng.randrange(len(blocks) + 1), moved)
            text = ("\n\n" if "\n\n" in text else ". ").join(blocks)
    words = text.split(" ")
    for _ in range(max(1, round(rate * len(words)))):
        position = rng.randrange(len(words))
        operation = rng.choice(("insert", "delete", "substitute"))
        if operation == "insert":
            words.insert(position, rng.choice(vocabulary))
        elif operation == "delete" and len(words) > 1:
            del words[position]
        else:
            words[position] = rng.choice(vocabulary)
    return " ".join(words)


def planted_corpus(num_originals: int, num_copies: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Shuffled originals and mutated copies, and the (original, copy) positions of each planted pair."""
    rng = random.Random(seed)
    chunks = list(dict.fromkeys(chunk for text in prose_documents() for chunk in chunk_text(text, 2000)
                                if len(chunk.split()) >= 120))
    originals = rng.sample(chunks, num_originals)
    vocabulary = [word for text in originals[:200] for word in text.split()]
    copies = [mutate(text, rng.uniform(0.002, 0.09), vocabulary, rng) for text in originals[:num_copies]]
    texts = originals + copies
    order = list(range(len(texts)))
    rng.shuffle(order)
    position = {item: index for index, item in enumerate(order)}
    pairs = [(position[i], position[num_originals + i]) for i in range(num_copies)]
    return [texts[i] for i in order], pairs


def true_similarities(texts: list[str], shingles: list[np.ndarray], pairs: list[tuple[int, int]]) -> dict:
    """Exact Jaccard of the planted pairs and of every pair a permissive LSH proposes."""
    permissive = NearDedupIndex(MinHashParams(112, 56, 2))
    permissive.add(band_hashes(texts, permissive.params), np.ones(len(texts), bool))
    first, second = permissive.candidate_pairs(partners=len(texts))  # every pair sharing a band
    candidates = {tuple(sorted(pair)) for pair in pairs} | set(zip(first.tolist(), second.tolist(), strict=True))
    return {pair: exact_jaccard(shingles[pair[0]], shingles[pair[1]]) for pair in candidates}


def removed_by(num_docs: int, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(removed mask, cluster labels) of keep-first clustering over `pairs`."""
    first = np.array([a for a, _ in pairs], np.int64)
    second = np.array([b for _, b in pairs], np.int64)
    labels = connected_components(num_docs, first, second)
    return labels != np.arange(num_docs), labels


def run_near_dedup(texts: list[str], shingles: list[np.ndarray], verify: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """What `temper prep --near-dedup` removes at THRESHOLD (the stage's own pieces, as prep calls them)."""
    weight = 0.05 if verify else 0.5
    params = MinHashParams(112, *derive_bands(THRESHOLD, 112, false_positive_weight=weight))
    index = NearDedupIndex(params)
    index.add(band_hashes(texts, params), np.ones(len(texts), bool))
    first, second = index.candidate_pairs(VERIFY_PARTNERS if verify else 1)
    num_candidates = len(first)
    if verify:
        similar = np.array([exact_jaccard(shingles[a], shingles[b]) >= THRESHOLD
                            for a, b in zip(first.tolist(), second.tolist(), strict=True)], bool)
        first, second = first[similar], second[similar]
    removed, labels = removed_by(len(texts), list(zip(first.tolist(), second.tolist(), strict=True)))
    return removed, labels, {"bands": params.bands, "rows": params.rows, "candidate_pairs": num_candidates}


def measure_accuracy(num_originals: int, num_copies: int, seed: int) -> dict:
    """Precision, recall and the per-bin curve on the planted corpus."""
    texts, planted = planted_corpus(num_originals, num_copies, seed)
    shingles = [np.unique(shingle_hashes(text)) for text in texts]
    similarity = true_similarities(texts, shingles, planted)
    true_pairs = [pair for pair, value in similarity.items() if value >= THRESHOLD]
    true_removed, _ = removed_by(len(texts), true_pairs)
    planted_similarity = np.array([similarity[tuple(sorted(pair))] for pair in planted])
    result = {"documents": len(texts), "planted_pairs": len(planted), "threshold": THRESHOLD,
              "true_pairs_at_threshold": len(true_pairs), "true_removals": int(true_removed.sum()),
              "planted_jaccard_histogram": np.histogram(planted_similarity, bins=[0, *BINS[:-1], 1.0001])[0].tolist(),
              "modes": {}}
    for name, verify in (("verify_jaccard", True), ("candidates_only", False)):
        started = time.perf_counter()
        removed, labels, info = run_near_dedup(texts, shingles, verify)
        hits = int((removed & true_removed).sum())
        curve = []
        for low, high in zip(BINS[:-1], BINS[1:], strict=True):
            top = high + 1e-9 if high >= 1.0 else high  # the last bin includes 1.0
            chosen = [pair for pair, value in zip(planted, planted_similarity, strict=True) if low <= value < top]
            together = sum(labels[a] == labels[b] for a, b in chosen)
            curve.append({"bin": f"{low:.2f}-{high:.2f}", "pairs": len(chosen),
                          "clustered": round(together / len(chosen), 3) if chosen else None,
                          "lsh_probability_mid": round(candidate_probability((low + high) / 2, info["bands"],
                                                                             info["rows"]), 3)})
        result["modes"][name] = {**info, "removed": int(removed.sum()), "correct": hits,
                                 "precision": round(hits / max(int(removed.sum()), 1), 4),
                                 "recall": round(hits / max(int(true_removed.sum()), 1), 4),
                                 "seconds": round(time.perf_counter() - started, 2), "curve": curve}
    return result


def accuracy_markdown(result: dict) -> str:
    """Tables: precision/recall per mode, and the curve by Jaccard bin."""
    lines = [f"{result['documents']:,} documents, {result['planted_pairs']:,} planted pairs, "
             f"{result['true_removals']:,} true removals at Jaccard >= {result['threshold']}", "",
             "| mode | bands x rows | candidate pairs | removed | precision | recall |", "|---|---|---|---|---|---|"]
    for name, mode in result["modes"].items():
        lines.append(f"| {name} | {mode['bands']} x {mode['rows']} | {mode['candidate_pairs']:,} | "
                     f"{mode['removed']:,} | {mode['precision']:.4f} | {mode['recall']:.4f} |")
    names = list(result["modes"])
    lines += ["", "| true Jaccard | planted pairs | " + " | ".join(f"clustered ({name})" for name in names) + " |",
              "|---|---|" + "---|" * len(names)]
    for index, row in enumerate(result["modes"][names[0]]["curve"]):
        cells = [f"{result['modes'][name]['curve'][index]['clustered']}" for name in names]
        lines.append(f"| {row['bin']} | {row['pairs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- throughput


def tempering_near_dedup(texts: list[str], params: MinHashParams) -> int:
    """Signatures, LSH pairs and clusters as `temper prep --near-dedup --workers 1` runs them; documents removed."""
    index = NearDedupIndex(params)
    index.add(band_hashes(texts, params), np.ones(len(texts), bool))
    return int(index.removed(*index.candidate_pairs()).sum())


def shingle_strings(text: str) -> list[bytes]:
    """Our shingles as datasketch takes them: the normalised word 5-grams, UTF-8 encoded."""
    words = normalise_for_shingles(text).split(" ")
    return [" ".join(words[start:start + 5]).encode("utf-8") for start in range(max(len(words) - 4, 1))]


def datasketch_near_dedup(texts: list[str], params: MinHashParams, batch: bool = False) -> int:
    """MinHash.update per shingle (or update_batch), MinHashLSH insert and query, union-find; documents removed."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=params.num_perm, params=(params.bands, params.rows))
    signatures = []
    for index, text in enumerate(texts):
        minhash = MinHash(num_perm=params.num_perm, seed=1)
        if batch:
            minhash.update_batch(shingle_strings(text))
        else:
            for shingle in shingle_strings(text):
                minhash.update(shingle)
        lsh.insert(index, minhash)
        signatures.append(minhash)
    parent = list(range(len(texts)))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for index, minhash in enumerate(signatures):
        for other in lsh.query(minhash):
            low, high = sorted((root(index), root(other)))
            parent[high] = low
    return sum(root(index) != index for index in range(len(texts)))


def datatrove_near_dedup(texts: list[str], params: MinHashParams, tokenizer: str) -> int:
    """datatrove's signature, bucket and cluster stages under LocalPipelineExecutor; documents removed."""
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    _encode_strings_for_xxhash()
    work = Path(tempfile.mkdtemp(prefix="datatrove-bench-"))
    try:
        config = MinhashConfig(n_grams=5, num_buckets=params.bands, hashes_per_bucket=params.rows)
        language = WhitespaceTokenizer("en") if tokenizer == "whitespace" else "en"
        documents = [Document(text=text, id=str(index)) for index, text in enumerate(texts)]
        quiet = {"logging_dir": str(work / "logs"), "skip_completed": False}
        LocalPipelineExecutor([documents, MinhashDedupSignature(str(work / "sigs"), config=config, language=language)],
                              tasks=1, workers=1, **quiet).run()
        LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=config)],
                              tasks=params.bands, workers=1, **quiet).run()
        LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)],
                              tasks=1, workers=1, **quiet).run()
        removed = sum(path.stat().st_size // 4 for path in (work / "remove").glob("*.remove"))
        return removed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _encode_strings_for_xxhash() -> None:
    """datatrove 0.10 hands str to xxhash, which xxhash 4 refuses ("Strings must be encoded"); encode first.

    xxhash 3 hashed a str as its UTF-8 bytes, so this is the same hash at the cost of one `encode`.
    """
    import xxhash
    from datatrove.utils.hashes import xxhash as datatrove_xxhash

    try:
        xxhash.xxh64_intdigest("probe")
    except TypeError:
        datatrove_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)
        datatrove_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode() if isinstance(data, str) else data)


def available_rows() -> dict:
    """Row name → function(texts, params), or the reason it cannot run."""
    rows = {"tempering": tempering_near_dedup}
    try:
        import datasketch  # noqa: F401

        rows["datasketch"] = datasketch_near_dedup
        rows["datasketch (update_batch)"] = lambda texts, params: datasketch_near_dedup(texts, params, batch=True)
    except ImportError:
        rows["datasketch"] = "datasketch is not installed (pip install datasketch)"
    try:
        import datatrove  # noqa: F401

        rows["datatrove (whitespace words)"] = lambda texts, params: datatrove_near_dedup(texts, params, "whitespace")
        try:
            import spacy  # noqa: F401

            rows["datatrove (spaCy words, default)"] = lambda texts, params: datatrove_near_dedup(texts, params, "en")
        except ImportError:
            rows["datatrove (spaCy words, default)"] = "spacy is not installed (datatrove's English word tokenizer)"
    except ImportError:
        rows["datatrove (whitespace words)"] = "datatrove is not installed (pip install datatrove)"
    return rows


def measure_throughput(num_originals: int, num_copies: int, seed: int, rounds: int) -> dict:
    """Median wall time of each row over `rounds` alternating rounds, as documents/s and MB/s."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    texts, _ = planted_corpus(num_originals, num_copies, seed)
    num_mb = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    params = MinHashParams(112, 14, 8)
    rows = available_rows()
    times: dict[str, list[float]] = {name: [] for name, fn in rows.items() if callable(fn)}
    removed: dict[str, int] = {}
    loads = []
    for _ in range(rounds):
        for name in times:
            loads.append(os.getloadavg()[0])
            started = time.perf_counter()
            removed[name] = rows[name](texts, params)
            times[name].append(time.perf_counter() - started)
            print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr)
    ours = statistics.median(times["tempering"])
    result = {"documents": len(texts), "mb": round(num_mb, 2), "bands": params.bands, "rows_per_band": params.rows,
              "num_perm": params.num_perm, "rounds": rounds, "load_average_during": [round(x, 2) for x in loads],
              "rows": {}}
    for name, fn in rows.items():
        if not callable(fn):
            result["rows"][name] = {"skipped": fn}
            continue
        median = statistics.median(times[name])
        result["rows"][name] = {"seconds": [round(t, 3) for t in times[name]], "median_s": round(median, 3),
                                "docs_per_s": round(len(texts) / median, 1), "mb_per_s": round(num_mb / median, 3),
                                "tempering_speedup": round(median / ours, 2), "removed": removed[name]}
    return result


def throughput_markdown(result: dict) -> str:
    """One row per tool: documents/s, MB/s, and Tempering's speed-up over it."""
    lines = [f"{result['documents']:,} documents, {result['mb']} MB, {result['num_perm']} permutations, "
             f"{result['bands']} bands x {result['rows_per_band']} rows, median of {result['rounds']} rounds, one core", "",
             "| row | median s | documents/s | MB/s | Tempering is N x faster | documents removed |",
             "|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | | |")
            continue
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['docs_per_s']:,.1f} | {row['mb_per_s']:.2f} | "
                     f"{row['tempering_speedup']:.2f}x | {row['removed']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The filtering stages of `temper prep`, in order: quality rules, near-duplicates, perplexity, per-source limits.

They decide which units (data/units.py) to keep before anything is tokenized into shards,
as a boolean mask over unit numbers. Passes over the inputs:
  1. every unit: its source and length; in the worker processes its quality verdict and its
     MinHash band hashes (data/analysis.py);
  2. with `verify_jaccard`, the units in candidate pairs: their exact shingle sets (in batches
     within a memory budget counted in real bytes, one pass per batch);
  3. with a perplexity model or a token-based limit, the units still kept: their perplexity
     and token count.
Memory grows with the number of units (about 30 bytes each, plus 8 per LSH band and the
scores) and, with `verify_jaccard`, with the number of candidate pairs (about 40 bytes each),
never with their text. Each stage counts, per source, the documents and characters
it received, removed and passed on, and records its settings.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field

import numpy as np

from tempering.allocator import release_free_memory
from tempering.config.schema import PrepConfig, percentile_band
from tempering.data.analysis import AnalysisTask, analyse_in_order
from tempering.data.limits import SourceLimit, apply_limit, fraction_cap
from tempering.data.near_dedup import (
    BALANCED_FALSE_POSITIVE_WEIGHT,
    VERIFIED_FALSE_POSITIVE_WEIGHT,
    VERIFY_PARTNERS,
    MinHashParams,
    NearDedupIndex,
    connected_components,
    derive_bands,
    distinct_shingles,
    exact_jaccard,
)
from tempering.data.ppl_filter import Scorer, keep_by_perplexity, score_percentiles
from tempering.data.quality import RULES, QualityThresholds
from tempering.data.stage_counts import StageCounts
from tempering.data.units import CorpusUnits, Unit

ANALYSIS_BATCH_UNITS = 256
ANALYSIS_BATCH_CHARS = 2_000_000
SCORE_BATCH_UNITS = 256
# Bytes of shingle hashes the exact Jaccard check holds at once: 8 per distinct shingle, counted in the first pass.
VERIFY_BUDGET_BYTES = 64 << 20
SHINGLE_BYTES = np.dtype(np.uint64).itemsize
# Pairs the exact check's Python loops turn into lists at a time.
PAIR_STEP = 4096
# `progress(label)` opens a progress bar over the input bytes and yields its advance callback.
Progress = Callable[[str], AbstractContextManager[Callable[[int], None]]]
TokenCounter = Callable[[list[str]], list[int]]


@dataclass
class FilterResult:
    """Which units to keep, each stage's report (for the manifest), and the perplexity of the scored units."""

    keep: np.ndarray
    stages: dict = field(default_factory=dict)
    scored: np.ndarray | None = None  # unit numbers that were scored
    scores: np.ndarray | None = None
    sources: np.ndarray | None = None  # source index of every unit
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each pass (reported, not recorded)


def needs_filtering(options: PrepConfig) -> bool:
    """Whether any stage needs the whole corpus before writing (everything but chunking)."""
    return bool(options.quality_filter or options.near_dedup or options.ppl_model or options.dataset_limit
                or options.max_source_fraction)


def minhash_params(options: PrepConfig) -> MinHashParams:
    """Permutations, bands and rows: given, or derived from the threshold (leaning to recall when pairs are verified)."""
    if options.near_dedup_bands is not None:
        return MinHashParams(options.minhash_perm, options.near_dedup_bands, options.near_dedup_rows)
    weight = VERIFIED_FALSE_POSITIVE_WEIGHT if options.verify_jaccard else BALANCED_FALSE_POSITIVE_WEIGHT
    return MinHashParams(options.minhash_perm, *derive_bands(options.near_dedup_threshold, options.minhash_perm,
                                                             false_positive_weight=weight))


def quality_thresholds(options: PrepConfig) -> QualityThresholds:
    """The quality rules' thresholds from the prep options."""
    return QualityThresholds(**{name: getattr(options, f"quality_{name}")
                                for name in QualityThresholds.__dataclass_fields__})


def run_filters(units: CorpusUnits, options: PrepConfig, *, limits: dict[int, SourceLimit], progress: Progress,
                scorer: Scorer | None = None, count_tokens: TokenCounter | None = None) -> FilterResult:
    """Run every enabled filtering stage over `units`; return the mask of units to keep and the stage reports."""
    task = AnalysisTask(quality=quality_thresholds(options) if options.quality_filter else None,
                        minhash=minhash_params(options) if options.near_dedup else None,
                        shingle_sizes=options.near_dedup and options.verify_jaccard)
    index = NearDedupIndex(task.minhash, keep_sizes=options.verify_jaccard) if task.minhash else None
    started = time.perf_counter()
    sources, lengths, problems = _first_pass(units, task, options.workers, index, progress)
    result = FilterResult(keep=np.ones(len(sources), bool), sources=sources)
    result.seconds["analyse"] = time.perf_counter() - started
    names = units.source_names
    if options.quality_filter:
        result.stages["quality"] = _quality_stage(result.keep, sources, lengths, problems, names, options)
    if index is not None:
        started = time.perf_counter()
        result.stages["near_dedup"] = _near_dedup_stage(result.keep, sources, lengths, index, units, options,
                                                        progress)
        result.seconds["near_dedup"] = time.perf_counter() - started
        index = None  # the band hashes are not needed past this stage
    need_tokens = options.max_source_fraction is not None or any(limit.unit == "tokens" for limit in limits.values())
    tokens = None
    if scorer is not None or need_tokens:
        started = time.perf_counter()
        result.scored = np.flatnonzero(result.keep)
        result.scores, tokens = _scoring_pass(units, result.keep, scorer, count_tokens if need_tokens else None,
                                              progress)
        result.seconds["score"] = time.perf_counter() - started
    if scorer is not None:
        result.stages["perplexity"] = _perplexity_stage(result, lengths, names, options, scorer)
    if limits or options.max_source_fraction is not None:
        result.stages["limits"] = _limits_stage(result.keep, sources, lengths, tokens, names, limits, options)
    # The passes freed far more than they keep (texts, shingle sets, pairs, tokenizer buffers); hand the
    # pages back, or writing starts on top of them (peak 280 -> 244 MB at 8x the prose corpus, docs/performance.md).
    release_free_memory()
    return result


def _first_pass(units: CorpusUnits, task: AnalysisTask, workers: int, index: NearDedupIndex | None,
                progress: Progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unit's source, length and quality problem code; band hashes go into `index`."""
    sources, lengths, problems = [], [], []
    with progress("prep: analyse") as advance:
        batches = _batches(units.iterate(on_bytes=advance))
        for (batch_sources, batch_lengths), features in analyse_in_order(batches, task, workers):
            sources.append(batch_sources)
            lengths.append(batch_lengths)
            problems.append(features.problems)
            if index is not None:
                index.add(features.band_hashes, features.problems < 0, features.shingle_sizes)
    if not sources:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8)
    return np.concatenate(sources), np.concatenate(lengths), np.concatenate(problems)


def _batches(stream: Iterator[Unit]) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], list[str]]]:
    """((sources, lengths), texts) batches of units, bounded in count and characters."""
    texts, sources, num_chars = [], [], 0
    for unit in stream:
        texts.append(unit.text)
        sources.append(unit.source)
        num_chars += len(unit.text)
        if len(texts) >= ANALYSIS_BATCH_UNITS or num_chars >= ANALYSIS_BATCH_CHARS:
            yield (np.array(sources, np.int32), np.array([len(t) for t in texts], np.int64)), texts
            texts, sources, num_chars = [], [], 0
    if texts:
        yield (np.array(sources, np.int32), np.array([len(t) for t in texts], np.int64)), texts


def _counted(keep: np.ndarray, sources: np.ndarray, lengths: np.ndarray, names: list[str]) -> StageCounts:
    counts = StageCounts(names)
    counts.add(sources[keep], lengths[keep], out=False)
    return counts


def _quality_stage(keep: np.ndarray, sources: np.ndarray, lengths: np.ndarray, problems: np.ndarray,
                   names: list[str], options: PrepConfig) -> dict:
    counts = _counted(keep, sources, lengths, names)
    removed = keep & (problems >= 0)
    by_rule = np.bincount(sources[removed] * len(RULES) + problems[removed],
                          minlength=len(names) * len(RULES)).reshape(len(names), len(RULES))
    keep &= ~removed
    counts.add(sources[keep], lengths[keep], out=True)
    settings = {f"quality_{name}": getattr(options, f"quality_{name}") for name in QualityThresholds.__dataclass_fields__}
    return {"settings": settings, "sources": counts.by_source(),
            "removed_by_rule": {name: {rule: int(by_rule[s, r]) for r, rule in enumerate(RULES)}
                                for s, name in enumerate(names)}}


def _near_dedup_stage(keep: np.ndarray, sources: np.ndarray, lengths: np.ndarray, index: NearDedupIndex,
                      units: CorpusUnits, options: PrepConfig, progress: Progress) -> dict:
    counts = _counted(keep, sources, lengths, units.source_names)
    first, second = index.candidate_pairs(VERIFY_PARTNERS if options.verify_jaccard else 1)
    num_candidates = len(first)
    if options.verify_jaccard and num_candidates:
        similar = _verified(units, first, second, index.shingle_sizes(), options.near_dedup_threshold, progress)
        first, second = first[similar], second[similar]
    removed = index.removed(first, second)
    keep &= ~removed
    counts.add(sources[keep], lengths[keep], out=True)
    params = index.params
    return {"settings": {"minhash_perm": params.num_perm, "near_dedup_threshold": options.near_dedup_threshold,
                         "bands": params.bands, "rows": params.rows, "verify_jaccard": options.verify_jaccard,
                         "shingle_words": 5},
            "sources": counts.by_source(), "candidate_pairs": int(num_candidates),
            "verified_pairs": int(len(first)) if options.verify_jaccard else None,
            "clusters": index.num_clusters,
            "index_bytes_per_document": round(index.num_bytes / max(len(keep), 1), 1)}


def _verified(units: CorpusUnits, first: np.ndarray, second: np.ndarray, sizes: np.ndarray, threshold: float,
              progress: Progress) -> np.ndarray:
    """For each candidate pair, whether its exact shingle Jaccard reaches `threshold`.

    The pairs are taken one connected component of the candidate graph after another, so that a
    document's pairs come together and it is read in as few batches as possible, in batches whose
    documents' shingle sets fit VERIFY_BUDGET_BYTES together, counted from `sizes` (each unit's
    number of distinct shingles, from the first pass). The inputs are read once per batch: a
    corpus made of many copies of itself costs more passes, never more memory.
    """
    labels = connected_components(units.num_units, first, second)
    order = np.lexsort((second, first, labels[first]))  # by component (its first document), then by pair
    del labels
    first, second = first[order], second[order]
    similar = np.zeros(len(order), bool)
    for start, end in _pair_batches(first, second, sizes):
        similar[order[start:end]] = _verified_batch(units, first[start:end], second[start:end], sizes, threshold,
                                                    progress)
    return similar


def _pair_batches(first: np.ndarray, second: np.ndarray, sizes: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) runs of the pairs, in order, whose documents' shingle sets fit VERIFY_BUDGET_BYTES together.

    A pair whose two documents alone exceed the budget is a batch of its own.
    """
    batches, start, held, cost = [], 0, set(), 0
    for step in range(0, len(first), PAIR_STEP):
        firsts, seconds = first[step:step + PAIR_STEP], second[step:step + PAIR_STEP]
        first_bytes = (sizes[firsts].astype(np.int64) * SHINGLE_BYTES).tolist()
        second_bytes = (sizes[seconds].astype(np.int64) * SHINGLE_BYTES).tolist()
        rows = zip(firsts.tolist(), seconds.tolist(), first_bytes, second_bytes, strict=True)
        for pair, (a, b, a_bytes, b_bytes) in enumerate(rows, step):
            extra = (a not in held) * a_bytes + (b not in held) * b_bytes
            if pair > start and cost + extra > VERIFY_BUDGET_BYTES:
                batches.append((start, pair))
                start, held, cost, extra = pair, set(), 0, a_bytes + b_bytes
            held.update((a, b))
            cost += extra
    if len(first) > start:
        batches.append((start, len(first)))
    return batches


def _verified_batch(units: CorpusUnits, first: np.ndarray, second: np.ndarray, sizes: np.ndarray, threshold: float,
                    progress: Progress) -> np.ndarray:
    """Whether each pair of one batch reaches `threshold`: one pass reading the batch's documents."""
    documents = np.union1d(first, second)
    bounds = np.zeros(len(documents) + 1, np.int64)
    np.cumsum(sizes[documents], out=bounds[1:])
    # The batch's shingle sets end to end in one array: one allocation, handed back whole after the batch.
    held = np.empty(int(bounds[-1]), np.uint64)
    wanted = np.zeros(units.num_units, bool)
    wanted[documents] = True
    with progress("prep: verify pairs") as advance, \
            closing(units.iterate(wanted, on_bytes=advance)) as stream:
        for position, unit in enumerate(stream):
            shingles = distinct_shingles(unit.text)
            start, end = int(bounds[position]), int(bounds[position + 1])
            if unit.index != documents[position] or len(shingles) != end - start:
                raise RuntimeError(f"unit {unit.index} differs from the first pass's reading of it")
            held[start:end] = shingles
            if position + 1 == len(documents):
                break  # the rest of the inputs holds none of this batch's documents
    similar = np.zeros(len(first), bool)
    for step in range(0, len(first), PAIR_STEP):
        a = np.searchsorted(documents, first[step:step + PAIR_STEP])
        b = np.searchsorted(documents, second[step:step + PAIR_STEP])
        similar[step:step + len(a)] = [
            exact_jaccard(held[bounds[x]:bounds[x + 1]], held[bounds[y]:bounds[y + 1]]) >= threshold
            for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return similar


def _scoring_pass(units: CorpusUnits, keep: np.ndarray, scorer: Scorer | None, count_tokens: TokenCounter | None,
                  progress: Progress) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Perplexity (in the order of the kept units) and token count (per unit number) of the kept units."""
    scores = [] if scorer is not None else None
    tokens = np.zeros(len(keep), np.int64) if count_tokens is not None else None
    with progress("prep: score") as advance:
        batch: list[Unit] = []
        for unit in itertools.chain(units.iterate(keep, on_bytes=advance), [None]):
            if unit is not None:
                batch.append(unit)
            if batch and (unit is None or len(batch) >= SCORE_BATCH_UNITS):
                texts = [item.text for item in batch]
                if scores is not None:
                    scores.append(np.asarray(scorer(texts), np.float64))
                if tokens is not None:
                    tokens[[item.index for item in batch]] = count_tokens(texts)
                batch = []
    if scores is not None:
        scores = np.concatenate(scores) if scores else np.zeros(0)
    return scores, tokens


def _perplexity_stage(result: FilterResult, lengths: np.ndarray, names: list[str], options: PrepConfig,
                      scorer: Scorer) -> dict:
    keep, sources, scored, scores = result.keep, result.sources, result.scored, result.scores
    counts = _counted(keep, sources, lengths, names)
    band = percentile_band(options.ppl_keep) if options.ppl_keep else None
    if not options.ppl_report_only:
        kept = keep_by_perplexity(scores, band=band, max_perplexity=options.ppl_max)
        keep[scored[~kept]] = False
    counts.add(sources[keep], lengths[keep], out=True)
    by_source = {name: score_percentiles(scores[sources[scored] == s]) for s, name in enumerate(names)}
    settings = {"ppl_model": options.ppl_model, "ppl_model_sha256": getattr(scorer, "digest", None),
                "ppl_keep": options.ppl_keep, "ppl_max": options.ppl_max, "ppl_max_tokens": options.ppl_max_tokens,
                "ppl_report_only": options.ppl_report_only}
    return {"settings": settings, "sources": counts.by_source(), "num_scored": int(len(scores)),
            "percentiles": score_percentiles(scores), "percentiles_by_source": by_source}


def _limits_stage(keep: np.ndarray, sources: np.ndarray, lengths: np.ndarray, tokens: np.ndarray | None,
                  names: list[str], limits: dict[int, SourceLimit], options: PrepConfig) -> dict:
    counts = _counted(keep, sources, lengths, names)
    for source, limit in sorted(limits.items()):
        apply_limit(keep, sources, source, limit, tokens)
    cap = None
    if options.max_source_fraction is not None:
        totals = np.bincount(sources[keep], weights=tokens[keep], minlength=len(names)).astype(np.int64)
        cap = fraction_cap(totals.tolist(), options.max_source_fraction)
        for source, total in enumerate(totals.tolist()):
            if total > cap:
                apply_limit(keep, sources, source, SourceLimit(int(cap), "tokens"), tokens)
    counts.add(sources[keep], lengths[keep], out=True)
    report = {"settings": {"dataset_limit": options.dataset_limit, "max_source_fraction": options.max_source_fraction},
              "sources": counts.by_source()}
    if tokens is not None:
        kept_tokens = np.bincount(sources[keep], weights=tokens[keep], minlength=len(names)).astype(np.int64)
        report["tokens_kept"] = {name: int(kept_tokens[s]) for s, name in enumerate(names)}
        report["source_token_cap"] = None if cap is None or cap == float("inf") else int(cap)
    return report

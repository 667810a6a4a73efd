"""`temper prep`: raw files to token shards (read, clean, deduplicate, split, tokenize, pack, write).

`tokenizers` encodes a batch on all cores with the GIL released; meanwhile one thread reads
and cleans the next batch and another packs and writes the previous one.
The val split is chosen by a hash of each document's content: deterministic, independent
of file order, and duplicates always land in the same split. The output is a pure function
of (input bytes, tokenizer, options), so a re-run with nothing changed does nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rich.markup import escape
from tokenizers import Encoding, Tokenizer

from tempering.config.schema import PrepConfig
from tempering.data.filtering import FilterResult, needs_filtering, run_filters
from tempering.data.limits import SourceLimit, parse_dataset_limits, source_name
from tempering.data.ppl_filter import Scorer
from tempering.data.shards import (
    MANIFEST_FILE,
    SPLITS,
    TokenShards,
    TokenShardsBuilder,
    read_manifest,
)
from tempering.data.sources import SourceStats, discover_files
from tempering.data.stage_report import print_stage_report
from tempering.data.units import CorpusUnits, Unit
from tempering.errors import UserError
from tempering.tokenizer import TokenizerBundle, load_tokenizer
from tempering.tokenizer.bounded import MAX_PIECE_CHARS, encode_bounded, split_long_text
from tempering.tracking.console import console, print_table, progress_bar

# A batch also ends at this many characters, which bounds memory when documents are whole files.
MAX_BATCH_CHARS = 8_000_000
FIRST_BATCH_DOCUMENTS = 32
# Options that change speed, never the bytes written; a change to them alone is no reason to rebuild.
SPEED_ONLY_OPTIONS = frozenset({"batch_size", "workers"})
# Per-document perplexities, written beside the shards when a perplexity model scores them.
PPL_SCORES_FILE = "ppl_scores.jsonl"

# Texts (whole documents, or pieces of a very long one), whether each goes to val, whether each ends its document.
Batch = tuple[list[str], list[bool], list[bool]]


def run_prep(inputs: list[str] | None, tokenizer_dir: str | Path, output: str | Path, options: PrepConfig,
             scorer: Scorer | None = None) -> dict:
    """Turn input files into train/val token shards in `output`; print and return a summary.

    `scorer` (texts → perplexities, with a `digest` naming the model) is required when
    `options.ppl_model` is set; the CLI builds it from the checkpoint.
    """
    started = time.perf_counter()
    output = Path(output)
    bundle = load_tokenizer(tokenizer_dir)
    existing = _existing_manifest(output, bundle.fingerprint)
    files = [file for file in discover_files(list(inputs or [])) if not file.is_relative_to(output.absolute())]
    if not files:
        raise UserError(f"no input files outside --output {output}; pass --input PATH")
    if options.ppl_model and scorer is None:
        raise ValueError("prep.ppl_model is set but no scorer was given")
    names = [source_name(file, list(inputs or [])) for file in files]
    source_names = sorted(set(names))
    limits = {source_names.index(name): limit
              for name, limit in parse_dataset_limits(options.dataset_limit, source_names).items()}
    sources = [_describe_source(file) for file in files]
    recorded_options = {key: value for key, value in options.model_dump(mode="json").items()
                        if key not in SPEED_ONLY_OPTIONS}
    if scorer is not None:
        recorded_options["ppl_model_sha256"] = getattr(scorer, "digest", None)
    if existing is not None and _same_build(existing, sources, recorded_options) and _shards_intact(output):
        console.print(f"{escape(str(output))} is up to date (same tokenizer, inputs and options); nothing to do")
        return _summarise(existing, output, wall_time_s=time.perf_counter() - started, up_to_date=True)
    if existing is not None:
        _check_only_shards(output)
    with _removing_new_parents(output):
        layout = _SourceLayout(names, source_names, limits)
        manifest, pass_seconds = _build(files, sources, layout, bundle, output, options, recorded_options, scorer)
    summary = _summarise(manifest, output, wall_time_s=time.perf_counter() - started, up_to_date=False)
    summary["pass_seconds"] = {name: round(value, 2) for name, value in pass_seconds.items()}
    _print_summary(summary)
    _warn_about_val_split(summary, options)
    return summary


def _existing_manifest(output: Path, fingerprint: str) -> dict | None:
    """The manifest of shards already in `output`; UserError if `output` holds anything else."""
    if not output.exists():
        return None
    if not output.is_dir():
        raise UserError(f"--output {output} is a file; give a directory")
    entries = sorted(entry.name for entry in output.iterdir())
    if not entries:
        return None
    if MANIFEST_FILE not in entries:
        raise UserError(f"{output} already holds files ({entries[0]}, ...) but no {MANIFEST_FILE}, so they "
                        f"are not token shards; choose another --output or empty it")
    try:
        manifest = read_manifest(output)
    except UserError as error:
        raise UserError(f"{output} holds a damaged {MANIFEST_FILE} ({error}); delete {output} or choose "
                        f"another --output") from error
    recorded = manifest["tokenizer"]["fingerprint"]
    if recorded != fingerprint:
        raise UserError(f"{output} holds shards from another tokenizer (fingerprint {recorded}, this tokenizer "
                        f"{fingerprint}); choose another --output or delete it")
    return manifest


def _check_only_shards(output: Path) -> None:
    # A rebuild replaces the whole directory: it must hold nothing prep did not write.
    foreign = sorted(entry.name for entry in output.iterdir()
                     if entry.name not in (MANIFEST_FILE, PPL_SCORES_FILE, *SPLITS))
    if foreign:
        raise UserError(f"{output / foreign[0]} was not written by `temper prep`, and rebuilding replaces "
                        f"{output}; move it away or choose another --output")


@contextlib.contextmanager
def _removing_new_parents(output: Path) -> Iterator[None]:
    """On failure, remove the parent directories of `output` that did not exist before (if still empty)."""
    # The shard builder creates them for its temporary sibling; a failed prep must leave no trace.
    missing = [parent for parent in output.absolute().parents if not parent.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for parent in missing:
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def _describe_source(file: Path) -> dict:
    with open(file, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"path": str(file), "sha256": digest, "num_bytes": file.stat().st_size}


def _shards_intact(output: Path) -> bool:
    try:
        for split in SPLITS:
            TokenShards(output, split)  # checks that every shard file has its recorded size
    except UserError:
        return False
    return True


def _same_build(manifest: dict, sources: list[dict], options: dict) -> bool:
    # A manifest without binary_skipped_files predates binary detection: its shards may hold a
    # binary input tokenized as text, so the same inputs are no reason to keep them.
    return (manifest.get("sources") == sources and manifest.get("options") == options
            and "binary_skipped_files" in manifest.get("cleaning", {}))


class _SourceLayout:
    """Which source each input file belongs to, the sources' names (sorted) and their limits."""

    def __init__(self, file_names: list[str], names: list[str], limits: dict[int, SourceLimit]):
        self.names, self.limits = names, limits
        self.file_sources = [names.index(name) for name in file_names]


def _build(files: list[Path], sources: list[dict], layout: _SourceLayout, bundle: TokenizerBundle, output: Path,
           options: PrepConfig, recorded_options: dict, scorer: Scorer | None) -> tuple[dict, dict[str, float]]:
    tokenizer = raw_text_tokenizer(bundle.tokenizer)
    units = CorpusUnits(files, layout.file_sources, layout.names, options, token_sizes=_token_sizes(tokenizer))
    total_bytes = sum(source["num_bytes"] for source in sources)
    filtered = None
    if needs_filtering(options):
        filtered = run_filters(units, options, limits=layout.limits, scorer=scorer,
                               count_tokens=lambda texts: [len(ids) + 1 for ids in encode_bounded(tokenizer, texts)[0]],
                               progress=lambda label: progress_bar(label, total=total_bytes))
    write_started = time.perf_counter()
    with progress_bar("prep: write" if filtered else "prep", total=total_bytes) as advance, \
            TokenShardsBuilder(output, vocab_size=bundle.vocab_size, eos_id=bundle.eos_id,
                               shard_tokens=options.shard_tokens) as builder:
        num_cut = [0]
        stream = units.iterate(None if filtered is None else filtered.keep, on_bytes=advance)
        _tokenize_and_write(_document_batches(stream, options, num_cut), tokenizer, builder, bundle.eos_id)
        num_cut = num_cut[0]
        if num_cut:
            console.print(f"[yellow]warning:[/] {num_cut:,} document(s) longer than {MAX_PIECE_CHARS:,} characters "
                          "were tokenized in pieces (cut at whitespace where possible) to bound memory")
        source_stats, cleaning = units.source_stats, units.cleaning
        num_written = sum(writer.num_documents for writer in builder.writers.values())
        if num_written == 0:
            raise UserError(f"no documents to write: read {source_stats.num_documents:,} from {len(files):,} "
                            f"file(s), {_describe_removed(cleaning.removed(), source_stats, filtered)}")
        stages = _stage_reports(units, filtered)
        if filtered is not None and filtered.scores is not None:
            _write_scores(builder.path(PPL_SCORES_FILE), filtered, layout.names)
        manifest = builder.commit(
            tokenizer={"fingerprint": bundle.fingerprint, "path": str(Path(bundle.path).absolute()),
                       "vocab_size": bundle.vocab_size, "eos_id": bundle.eos_id},
            seq_len=options.seq_len,
            sources=sources,
            cleaning={
                "num_files": source_stats.num_files,
                "num_documents_read": cleaning.num_documents,
                "num_documents_kept": cleaning.num_kept,
                "num_text_bytes": cleaning.num_text_bytes,
                "removed": cleaning.removed(),
                "malformed_lines": source_stats.malformed_lines,
                "invalid_utf8_replaced_bytes": source_stats.replaced_bytes,
                "invalid_utf8_skipped_files": source_stats.skipped_files,
                "binary_skipped_files": source_stats.binary_skipped_files,
                "documents_encoded_in_pieces": num_cut,
                "source_of_file": {str(file): layout.names[index]
                                   for file, index in zip(files, layout.file_sources, strict=True)},
                "stages": stages,
            },
            options=recorded_options,
        )
    # Wall time per pass: reported, never recorded (the manifest is a function of the inputs and options).
    seconds = dict(filtered.seconds) if filtered is not None else {}
    seconds["write"] = time.perf_counter() - write_started
    return manifest, seconds


def _token_sizes(tokenizer: Tokenizer):
    """Texts → their token counts under the shard tokenizer (chunking by tokens)."""
    return lambda texts: [len(encoding.ids) for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def _stage_reports(units: CorpusUnits, filtered: FilterResult | None) -> dict:
    """Each enabled stage's settings and per-source counts, in pipeline order."""
    stages = {}
    if units.chunking is not None:
        stages["chunking"] = {"settings": {"chunk_size": units.options.chunk_size, "chunk_unit": units.options.chunk_unit},
                              "sources": units.chunking.by_source(removed=False)}
    if filtered is not None:
        stages.update(filtered.stages)
    return stages


def _write_scores(path: Path, filtered: FilterResult, names: list[str]) -> None:
    """One JSON line per scored document: its unit number, source, perplexity, and whether it was kept."""
    with open(path, "w", encoding="utf-8") as file:
        for index, score in zip(filtered.scored.tolist(), filtered.scores.tolist(), strict=True):
            file.write(json.dumps({"document": index, "source": names[filtered.sources[index]],
                                   "ppl": round(score, 4), "kept": bool(filtered.keep[index])}) + "\n")


def raw_text_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer set up for raw text: special-token strings in a document stay plain text."""
    # Otherwise a document quoting "<|eos|>" would end early and break the one-EOS-per-document rule.
    tokenizer.encode_special_tokens = True
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _describe_removed(removed: dict[str, int], stats: SourceStats, filtered: FilterResult | None) -> str:
    stages = "" if filtered is None else "".join(
        f", {sum(c['documents_removed'] for c in report['sources'].values()):,} removed by {stage}"
        for stage, report in filtered.stages.items())
    return (f"{removed['empty']:,} empty, {removed['duplicate']:,} duplicate{stages}, {stats.num_malformed_lines:,} "
            f"malformed lines, {len(stats.skipped_files):,} file(s) skipped for invalid UTF-8, "
            f"{len(stats.binary_skipped_files):,} file(s) skipped as binary")


def _document_batches(units: Iterator[Unit], options: PrepConfig, num_cut: list[int]) -> Iterator[Batch]:
    """Group units into tokenizer batches, marking which go to val.

    A document longer than MAX_PIECE_CHARS goes to the tokenizer in pieces (tokenizer/bounded.py),
    which may fall into consecutive batches: memory stays bounded by the batch, whatever one
    document's length. `num_cut[0]` counts such documents.
    """
    # The first 8 bytes of the content digest, read as a number below 2**64, pick the split.
    val_below = int(options.val_fraction * 2**64)
    texts: list[str] = []
    is_val: list[bool] = []
    ends: list[bool] = []
    num_chars = 0
    # Batches start small and double, so the tokenizer starts at once instead of waiting for a full batch.
    max_documents = min(FIRST_BATCH_DOCUMENTS, options.batch_size)
    for unit in units:
        val = int.from_bytes(unit.digest[:8], "big") < val_below
        pieces = split_long_text(unit.text)
        num_cut[0] += len(pieces) > 1
        for index, piece in enumerate(pieces):
            texts.append(piece)
            is_val.append(val)
            ends.append(index == len(pieces) - 1)
            num_chars += len(piece)
            if len(texts) >= max_documents or num_chars >= MAX_BATCH_CHARS:
                yield texts, is_val, ends
                texts, is_val, ends, num_chars = [], [], [], 0
                max_documents = min(2 * max_documents, options.batch_size)
    if texts:
        yield texts, is_val, ends


def _tokenize_and_write(batches: Iterator[Batch], tokenizer: Tokenizer, builder: TokenShardsBuilder,
                        eos_id: int) -> None:
    """Tokenize batch k on all cores while one thread reads batch k+1 and another writes batch k-1."""
    # Each single-worker pool keeps its stage in order; waiting on the previous future bounds
    # memory to one batch per stage and re-raises a stage's error here.
    with ThreadPoolExecutor(1, "prep-read") as reader, ThreadPoolExecutor(1, "prep-write") as writer:
        next_batch = reader.submit(next, batches, None)
        written: Future | None = None
        while (batch := next_batch.result()) is not None:
            next_batch = reader.submit(next, batches, None)
            encodings = tokenizer.encode_batch_fast(batch[0], add_special_tokens=False)
            if written is not None:
                written.result()
            written = writer.submit(_write_batch, builder, encodings, batch[1], batch[2], eos_id)
        if written is not None:
            written.result()


def _write_batch(builder: TokenShardsBuilder, encodings: list[Encoding], is_val: list[bool], ends: list[bool],
                 eos_id: int) -> None:
    if not any(is_val):
        builder.writers["train"].write(_pack(encodings, ends, eos_id, builder.dtype))
        return
    for split, wanted in (("train", False), ("val", True)):
        chosen = [index for index, flag in enumerate(is_val) if flag == wanted]
        builder.writers[split].write(_pack([encodings[i] for i in chosen], [ends[i] for i in chosen], eos_id,
                                           builder.dtype))


def _pack(encodings: list[Encoding], ends: list[bool], eos_id: int, dtype: np.dtype) -> np.ndarray:
    """Concatenate the encodings' ids, EOS after each that ends a document, into one array (one pass)."""
    num_tokens = sum(map(len, encodings)) + sum(ends)
    eos, no_eos = (eos_id,), ()
    ids = itertools.chain.from_iterable(itertools.chain(encoding.ids, eos if end else no_eos)
                                        for encoding, end in zip(encodings, ends, strict=True))
    return np.fromiter(ids, dtype=dtype, count=num_tokens)


def _summarise(manifest: dict, output: Path, *, wall_time_s: float, up_to_date: bool) -> dict:
    cleaning = manifest["cleaning"]
    splits = manifest["splits"]
    input_mb = cleaning["num_text_bytes"] / 1e6
    return {
        "output": str(output),
        "up_to_date": up_to_date,
        "num_files": cleaning["num_files"],
        "documents_read": cleaning["num_documents_read"],
        "documents_kept": cleaning["num_documents_kept"],
        "dropped": dict(cleaning["removed"]),
        "malformed_lines": sum(cleaning["malformed_lines"].values()),
        "invalid_utf8_replaced_bytes": sum(cleaning["invalid_utf8_replaced_bytes"].values()),
        "invalid_utf8_skipped_files": len(cleaning["invalid_utf8_skipped_files"]),
        "binary_skipped_files": len(cleaning["binary_skipped_files"]),
        **{split: {"documents": splits[split]["num_documents"], "tokens": splits[split]["num_tokens"],
                   "shards": len(splits[split]["shards"])} for split in SPLITS},
        "stages": cleaning.get("stages", {}),
        "input_mb": input_mb,
        "wall_time_s": wall_time_s,
        "mb_per_s": input_mb / wall_time_s if wall_time_s > 0 else 0.0,
    }


def _print_summary(summary: dict) -> None:
    rows = [
        ["files read", f"{summary['num_files']:,}"],
        ["documents read", f"{summary['documents_read']:,}"],
        ["  dropped: empty", f"{summary['dropped']['empty']:,}"],
        ["  dropped: duplicate", f"{summary['dropped']['duplicate']:,}"],
        ["documents kept", f"{summary['documents_kept']:,}"],
        ["malformed lines skipped", f"{summary['malformed_lines']:,}"],
        ["files skipped (invalid UTF-8)", f"{summary['invalid_utf8_skipped_files']:,}"],
        ["files skipped (binary)", f"{summary['binary_skipped_files']:,}"],
        ["bytes replaced (invalid UTF-8)", f"{summary['invalid_utf8_replaced_bytes']:,}"],
        ["train documents / tokens", f"{summary['train']['documents']:,} / {summary['train']['tokens']:,}"],
        ["val documents / tokens", f"{summary['val']['documents']:,} / {summary['val']['tokens']:,}"],
        ["input text MB", f"{summary['input_mb']:,.2f}"],
        ["throughput MB/s", f"{summary['mb_per_s']:,.2f}"],
        ["wall time s", f"{summary['wall_time_s']:,.2f}"],
    ]
    if len(summary.get("pass_seconds", {})) > 1:
        rows.append(["  per pass s", ", ".join(f"{name} {value:,.1f}" for name, value in summary["pass_seconds"].items())])
    print_table(f"temper prep → {summary['output']}", ["", "value"], rows)
    print_stage_report(summary["stages"])


def _warn_about_val_split(summary: dict, options: PrepConfig) -> None:
    val_tokens = summary["val"]["tokens"]
    if options.val_fraction > 0 and val_tokens == 0:
        console.print(f"[yellow]warning:[/] val_fraction={options.val_fraction} selected no document: "
                      f"the val split is empty; raise --val-fraction or add data")
    elif options.seq_len and 0 < val_tokens < options.seq_len + 1:
        console.print(f"[yellow]warning:[/] the val split holds {val_tokens:,} tokens, fewer than "
                      f"seq_len + 1 = {options.seq_len + 1:,}, so it yields no validation sequence; "
                      f"raise --val-fraction")


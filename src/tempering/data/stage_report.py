"""The printed report of prep's stages: per stage and source, documents and characters in, removed and out."""

from __future__ import annotations

from tempering.tracking.console import print_table


def print_stage_report(stages: dict) -> None:
    """Print one table of every stage's counts per source, then each stage's details (rules, clusters, percentiles)."""
    if not stages:
        return
    rows = []
    for stage, report in stages.items():
        for source, counts in report["sources"].items():
            rows.append([stage, source, f"{counts['documents_in']:,}", _removed(counts, "documents"),
                         f"{counts['documents_out']:,}", f"{counts['characters_in']:,}",
                         _removed(counts, "characters"), f"{counts['characters_out']:,}"])
    print_table("stages (per source)", ["stage", "source", "docs in", "removed", "docs out", "chars in",
                                        "removed", "chars out"], rows, left_columns=2)
    details = [row for stage, report in stages.items() for row in _details(stage, report)]
    if details:
        print_table("stage details", ["stage", "", "value"], details, left_columns=2)


def _removed(counts: dict, unit: str) -> str:
    key = f"{unit}_removed"
    return f"{counts[key]:,}" if key in counts else "-"


def _details(stage: str, report: dict) -> list[list[str]]:
    settings = ", ".join(f"{key.removeprefix('quality_')}={value}" for key, value in report["settings"].items()
                         if value is not None and key != "ppl_model_sha256")
    rows = [[stage, "settings", settings]]
    if stage == "quality":
        totals: dict[str, int] = {}
        for by_rule in report["removed_by_rule"].values():
            for rule, count in by_rule.items():
                totals[rule] = totals.get(rule, 0) + count
        rows += [[stage, f"removed: {rule}", f"{count:,}"] for rule, count in totals.items()]
    elif stage == "near_dedup":
        rows += [[stage, "candidate pairs", f"{report['candidate_pairs']:,}"]]
        if report["verified_pairs"] is not None:
            rows += [[stage, "pairs at or above threshold", f"{report['verified_pairs']:,}"]]
        rows += [[stage, "clusters", f"{report['clusters']:,}"],
                 [stage, "index bytes per document", f"{report['index_bytes_per_document']:,}"]]
    elif stage == "perplexity":
        percentiles = "  ".join(f"{key} {value:,.4g}" for key, value in report["percentiles"].items())
        rows += [[stage, "documents scored", f"{report['num_scored']:,}"], [stage, "perplexity", percentiles]]
    elif stage == "limits" and "tokens_kept" in report:
        rows += [[stage, f"tokens kept: {source}", f"{tokens:,}"] for source, tokens in report["tokens_kept"].items()]
    return rows

"""Turn the rows' raw rounds into medians, ratios to Tempering, the issue's targets and a Markdown table."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

RESULTS_END = "<!-- vs_peers:end-of-results -->"  # new blocks go in front of this line of the docs


def step_stats(step_end_s: list[float], step_tokens: list[int], skip: int) -> dict | None:
    """Median step time and tokens/s over the steps after the first `skip` intervals (None if too few)."""
    intervals = [b - a for a, b in zip(step_end_s, step_end_s[1:], strict=False)]
    tokens = step_tokens[1:]
    kept = list(zip(intervals, tokens, strict=True))[skip:] or list(zip(intervals, tokens, strict=True))[-1:]
    if not kept:
        return None
    return {"median_step_s": statistics.median(t for t, _ in kept),
            "tokens_per_s": statistics.median(n / t for t, n in kept if t > 0),
            "tokens_per_step": statistics.median(n for _, n in kept), "num_steps_measured": len(kept)}


def summarise_row(rounds: list[dict], flops_per_token: float, matmul_rate: float, max_cpu_pressure: float) -> dict:
    """Medians over the rounds that ran undisturbed (all that ran, if none did); MFU against `matmul_rate`."""
    done = [r for r in rounds if r.get("tokens_per_s")]
    if not done:
        return {"status": rounds[0].get("status", "failed") if rounds else "not run"}
    quiet = [r for r in done if (r.get("cpu_pressure") or 0) <= max_cpu_pressure]
    used = quiet or done
    med = {key: statistics.median(r[key] for r in used if r.get(key) is not None)
           for key in ("median_step_s", "tokens_per_s", "peak_rss_mb", "time_to_first_step_s", "wall_s")
           if any(r.get(key) is not None for r in used)}
    med["mfu"] = med["tokens_per_s"] * flops_per_token / matmul_rate
    med["tokens_per_s_rounds"] = [round(r["tokens_per_s"], 1) for r in used]
    med["disturbed_rounds_left_out"] = len(done) - len(used) if quiet else 0
    med["all_rounds_disturbed"] = not quiet
    return {"status": "ok", **med}


def add_ratios(summaries: dict[str, dict]) -> None:
    """Give each row (key group/name/precision) its ratios to the Tempering row of the same group and precision."""
    for key, row in summaries.items():
        group, _, precision = key.split("/")
        base = summaries.get(f"{group}/tempering/{precision}", {})
        if row.get("status") != "ok" or base.get("status") != "ok":
            continue
        for metric in ("tokens_per_s", "peak_rss_mb", "time_to_first_step_s"):
            if row.get(metric) and base.get(metric):
                row[f"{metric}_vs_tempering"] = row[metric] / base[metric]


def targets(summaries: dict[str, dict], precision: str) -> list[dict]:
    """The issue's targets that this run measures: Tempering over the peer (or MFU), the goal, met or not."""
    def value(group, name, metric):
        row = summaries.get(f"{group}/{name}/{precision}", {})
        return row.get(metric) if row.get("status") == "ok" else None

    def ratio(group, peer, metric, ours_name="tempering"):
        ours, theirs = value(group, ours_name, metric), value(group, peer, metric)
        return ours / theirs if ours and theirs else None

    def over_trl(ours_name):
        found = [ratio("sft", peer, "tokens_per_s", ours_name) for peer in ("trl-bfd", "trl-wrapped")]
        found = [r for r in found if r]
        return min(found) if found else None

    checks = [
        ("pretrain tokens/s: Tempering ÷ HF Trainer", ratio("pretrain", "hf-trainer", "tokens_per_s"), ">=", 1.25),
        ("pretrain tokens/s: Tempering ÷ hand-written HF loop", ratio("pretrain", "hf-loop", "tokens_per_s"), ">=", 1.15),
        ("pretrain MFU of Tempering", value("pretrain", "tempering", "mfu"), ">=", 0.60),
        ("SFT tokens/s: Tempering ÷ fastest TRL packing", over_trl("tempering"), ">=", 1.5),
        ("SFT tokens/s: Tempering long rows (--pack-length 2·seq) ÷ fastest TRL packing",
         over_trl("tempering long-rows"), ">=", 1.5),
        ("time to first step: Tempering ÷ HF Trainer", ratio("pretrain", "hf-trainer", "time_to_first_step_s"), "<=", 0.5),
        ("peak RSS: Tempering ÷ HF Trainer", ratio("pretrain", "hf-trainer", "peak_rss_mb"), "<=", 0.8),
    ]
    return [{"target": name, "value": v, "goal": f"{op} {goal}",
             "met": None if v is None else (v >= goal if op == ">=" else v <= goal)}
            for name, v, op, goal in checks]


def markdown(report: dict) -> str:
    """The results as Markdown: machine, command, matmul rates, one table per group, the targets."""
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['nproc']} cores (nproc), torch {m['torch']} with {m['torch_threads']} "
             f"threads, Python {m['python']}; peers: {report['peer_versions'] or 'not installed'}.",
             f"Command: `{report['command']}`",
             f"Workload: preset `{report['preset']}` (vocab {report['vocab_size']}), seq {report['seq_len']}, "
             f"batch {report['batch_size']}, {report['steps']} steps per row (median over steps after "
             f"{report['warmup_steps']}), {report['rounds']} rounds; {report['flops_per_token'] / 1e6:.1f} MFLOP "
             f"per token. Same initial weights: {report.get('same_start', 'not checked')}."]
    for precision, rates in report["matmul_flops_per_s"].items():
        lines.append(f"{precision} 2048² matmul: {', '.join(f'{r / 1e9:.0f}' for r in rates)} GFLOP/s (before, "
                     f"between and after the rounds); MFU of {precision} rows is against the median, "
                     f"{report['matmul_rate_used'][precision] / 1e9:.0f}.")
    lines.append("")
    for group in ("pretrain", "sft"):
        rows = {k: v for k, v in report["rows"].items() if k.startswith(group + "/")}
        if not rows:
            continue
        lines += [f"**{group}**", "",
                  "| row | precision | median step (s) | tokens/s | MFU | peak RSS (MB) | first step (s) "
                  "| tok/s ÷ Tempering | RSS ÷ Tempering | first step ÷ Tempering |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for key, row in rows.items():
            _, name, precision = key.split("/")
            if row.get("status") != "ok":
                lines.append(f"| {name} | {precision} | {row.get('status')} |||||||| ")
                continue
            name += " (every round disturbed by other jobs)" if row.get("all_rounds_disturbed") else ""
            lines.append(
                f"| {name} | {precision} | {row['median_step_s']:.3f} | {row['tokens_per_s']:,.0f} | {row['mfu']:.1%} "
                f"| {row.get('peak_rss_mb', 0):,.0f} | {row.get('time_to_first_step_s', float('nan')):.2f} "
                f"| {_ratio(row, 'tokens_per_s')} | {_ratio(row, 'peak_rss_mb')} | {_ratio(row, 'time_to_first_step_s')} |")
        lines.append("")
    for precision, checks in report["targets"].items():
        lines += [f"| target ({precision}) | measured | goal | met |", "|---|---|---|---|"]
        for t in checks:
            if t["value"] is None:
                continue
            shown = f"{t['value']:.1%}" if "MFU" in t["target"] else f"{t['value']:.2f}×"
            lines.append(f"| {t['target']} | {shown} | {t['goal']} | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


def _ratio(row: dict, metric: str) -> str:
    value = row.get(f"{metric}_vs_tempering")
    return "—" if value is None else f"{value:.2f}×"


def write_docs_block(doc: Path, tag: str, table: str) -> None:
    """Replace this tag's block in `doc`, or insert it before the end-of-results marker (else at the end)."""
    begin, end = f"<!-- vs_peers:{tag}:begin -->", f"<!-- vs_peers:{tag}:end -->"
    block = f"{begin}\n{table}\n{end}\n"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end) + "\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif RESULTS_END in text:
        text = text.replace(RESULTS_END, block + "\n" + RESULTS_END)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.write_text(text, encoding="utf-8")

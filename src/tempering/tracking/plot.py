"""`temper plot`: one PNG of runs' metrics.jsonl — loss, perplexity, LR, throughput, telemetry.

One panel per metric; in each, every run and every split that has the metric (`train`, `val`,
`val:new`, `val:original`, `system`) is a line labelled `<run> <split>`, so several runs overlay.
Recovery and early-stop events are vertical lines on every panel. The x axis is the step, or
tokens seen (`--x tokens`, interpolated from the train records). matplotlib, Agg backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tempering.errors import UserError
from tempering.tracking.metrics import read_metrics

DEFAULT_METRICS = ("loss", "ppl", "lr", "tokens_per_s", "rss_mb", "data_wait_frac")
MARKED_EVENTS = {"recovery": "--", "early_stop": ":"}
LOG_SCALE = {"ppl"}
TITLES = {"loss": "loss", "ppl": "perplexity", "lr": "learning rate", "tokens_per_s": "tokens/s",
          "rss_mb": "process RSS (MB)", "peak_rss_mb": "peak RSS (MB)", "data_wait_frac": "fraction of time waiting for data",
          "cpu_pct": "CPU % (100 = one core)", "ram_used_pct": "system RAM used %", "grad_norm": "gradient norm"}


@dataclass
class RunMetrics:
    """One run's records, grouped by split, with its events."""

    name: str
    by_split: dict[str, list[dict]] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)

    def tokens_at(self, steps: list[int]) -> list[float]:
        """Tokens seen at each step, interpolated from the train records."""
        import numpy as np

        train = [r for r in self.by_split.get("train", []) if "tokens_seen" in r]
        if not train:
            raise UserError(f"run {self.name} has no train records with tokens_seen; plot against --x step")
        start = min(r["step"] for records in self.by_split.values() for r in records)  # 0 tokens seen here
        return list(np.interp(steps, [start] + [r["step"] for r in train], [0] + [r["tokens_seen"] for r in train]))


def load_run(run_dir: Path, name: str) -> RunMetrics:
    """Read a run dir's metrics.jsonl (a line cut by a kill is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl: give a run directory (the --save-dir of a training run)")
    records = read_metrics(path, skip_cut_lines=True)
    run = RunMetrics(name)
    for record in records:
        if "event" in record:
            run.events.append(record)
        elif "split" in record:
            run.by_split.setdefault(record["split"], []).append(record)
    return run


def run_names(run_dirs: list[Path]) -> list[str]:
    """Each run's directory name, with its parent's where two names collide."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [f"{Path(d).resolve().parent.name}/{n}" if names.count(n) > 1 else n for d, n in zip(run_dirs, names, strict=True)]


def plot_runs(run_dirs: list[Path], output: Path, *, metrics: list[str] | None = None, x: str = "step") -> dict:
    """Draw the runs' metrics into one PNG; return {metric: [line labels]} of what was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("temper plot needs matplotlib: pip install 'tempering[track]'") from None
    runs = [load_run(d, n) for d, n in zip(run_dirs, run_names(run_dirs), strict=True)]
    wanted = list(metrics or DEFAULT_METRICS)
    present = [m for m in wanted if any(m in r for run in runs for rs in run.by_split.values() for r in rs)]
    if not present:
        available = sorted({k for run in runs for rs in run.by_split.values() for r in rs for k in r
                            if isinstance(r[k], int | float) and k != "step"})
        raise UserError(f"none of {', '.join(wanted)} is in these runs' metrics.jsonl; "
                        f"available: {', '.join(available)}")
    columns = 1 if len(present) == 1 else 2
    rows = -(-len(present) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 3.2 * rows), squeeze=False)
    drawn = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, metric in enumerate(present):
        axis = axes[index // columns][index % columns]
        drawn[metric] = _draw_metric(axis, runs, metric, x, colors)
    for index in range(len(present), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=80)
    plt.close(figure)
    return drawn


def _draw_metric(axis, runs: list[RunMetrics], metric: str, x: str, colors: list[str]) -> list[str]:
    labels = []
    for run_index, run in enumerate(runs):
        color = colors[run_index % len(colors)]
        styles = iter(["-", "-.", (0, (1, 1)), (0, (5, 2, 1, 2))])
        for split, records in run.by_split.items():
            points = [(r["step"], r[metric]) for r in records if isinstance(r.get(metric), int | float)]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            xs = run.tokens_at(list(steps)) if x == "tokens" else steps
            label = f"{run.name} {split}" if split != "system" else run.name
            style = "-" if split in ("train", "system") else next(styles, "-.")
            marker = "o" if split.startswith("val") else None
            axis.plot(xs, values, linestyle=style, marker=marker, markersize=3, color=color,
                      alpha=0.55 if split == "train" and len(run.by_split) > 1 else 1.0, label=label)
            labels.append(label)
        for event in run.events:
            if event.get("event") in MARKED_EVENTS:
                where = run.tokens_at([event["step"]])[0] if x == "tokens" else event["step"]
                label = f"{run.name} {event['event']}"
                axis.axvline(where, color=color, linestyle=MARKED_EVENTS[event["event"]], linewidth=1.2,
                             label=label if label not in labels else None)
                labels.append(label)
    axis.set_title(TITLES.get(metric, metric))
    axis.set_xlabel("tokens seen" if x == "tokens" else "step")
    if metric in LOG_SCALE:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return labels

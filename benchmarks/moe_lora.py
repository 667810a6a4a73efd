"""Mixture of experts and LoRA against the tools a user would pick instead, plus the sequential-expert workflow.

    python benchmarks/moe_lora.py [--parts moe lora dpo experts] [--steps 12] [--precision fp32 bf16]
                                  [--rounds 1] [--out benchmarks/results/moe_lora.json]

Parts (every row a separate process, its peak RSS from wait4; tokens/s the median over the steps
after --warmup; CPU s the child's whole-run user + system time, start-up included, a figure the
steal time of a shared VM does not inflate as it does wall time; the rows of a part run in turn,
--rounds times):
  moe:     `temper pretrain --preset moe_nano` | HF `Trainer` on `MixtralForCausalLM` (same initial
           weights, windows, seq 256, batch 8, AdamW settings, balancing loss 0.01; z-loss off)
  lora:    `temper sft` full fine-tuning | `temper sft --lora-r 16` (also with --gradient-checkpointing) |
           peft + HF `Trainer` on the exported model (same rank, alpha, targets), preset `small` (vocab
           32,000), unpacked chats padded per batch
  dpo:     `temper dpo` full (a live reference copy) | `temper dpo --lora-r 16` (the base is the reference)
  experts: expert 0 on prose, expert 1 on code (--freeze-shared), merge, router-only phase; each domain's
           val loss of the merged model against the expert run that trained on it (routed to its expert)
Output: JSON (--out) and a Markdown summary on stdout (paste into docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_description, prepare_shards
from peers.report import step_stats
from peers.workload import pydoc_chats, token_windows
from vs_peers import (
    OPTIMIZER,
    child_env,
    common_temper_args,
    run_child,
    temper_steps,
    wait_for_quiet_cpu,
)

BENCH_DIR = Path(__file__).resolve().parent
LORA = {"r": 16, "alpha": 32.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def main() -> None:
    """Run the chosen parts, write the JSON and print the summary."""
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_description(), "command": " ".join(["python", *sys.argv]), "steps": args.steps,
              "mmap_threshold": f"pinned at {args.mmap_threshold}" if args.mmap_threshold else "glibc dynamic",
              "seq_len": args.seq_len, "batch_size": args.batch_size}
    shards, tok = prepare_shards(args.work, 8192, ("prose",))
    for part in args.parts:
        report[part] = PARTS[part](args, shards, tok)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print(summary(report))


def measure_moe(args, shards: Path, tok: Path) -> dict:
    """moe_nano: Tempering against HF Trainer + MixtralForCausalLM, per precision."""
    checkpoint = initial_checkpoint(args.work / "init-moe_nano", "moe_nano", tok, vocab=None,
                                    overrides={"router_z_loss_coef": 0.0})
    windows = token_windows(shards, args.seq_len, args.work / f"windows-{args.seq_len}.npy")
    results = {}
    for precision in args.precision:
        rows = {
            "tempering": ["pretrain", "--data", shards, "--tokenizer", tok, "--preset", "moe_nano",
                          "model.router_z_loss_coef=0", "--seq-len", args.seq_len, "--batch-size", args.batch_size,
                          "--val-split", "0", "--seed", 0, "--max-steps", args.steps, *common_temper_args(precision)],
            "hf-trainer-mixtral": peer_spec("peers.hf_mixtral_trainer", args, precision,
                                            checkpoint=checkpoint, windows=windows),
        }
        results[precision] = run_rows(rows, args)
        results[precision]["ratios"] = ratios(results[precision], "tempering", "hf-trainer-mixtral")
    return results


def measure_lora(args, shards: Path, tok: Path) -> dict:
    """LoRA SFT at `small`: against full fine-tuning (memory) and peft + HF Trainer (speed)."""
    checkpoint = initial_checkpoint(args.work / "init-small", "small", tok, vocab=32000)
    chats = pydoc_chats(args.work / "pydoc_chats.jsonl")
    rendered, pad_id = render_chats(chats, tok, args.work / "rendered_chats.jsonl", args.seq_len)
    sft = ["sft", "--checkpoint", checkpoint, "--data", chats, "--no-packing", "--seq-len", args.seq_len,
           "--batch-size", args.batch_size, "--val-split", "0", "--seed", 0, "--max-steps", args.steps,
           *common_temper_args("fp32")]
    lora = ["--lora-r", LORA["r"], "--lora-alpha", LORA["alpha"], f"lora.target_modules={json.dumps(LORA['targets'])}"]
    rows = {"tempering-full": sft, "tempering-lora": [*sft, *lora],
            "tempering-lora-checkpointing": [*sft, *lora, "--gradient-checkpointing"],
            "peft-hf-trainer": peer_spec("peers.peft_sft_trainer", args, "fp32", checkpoint=checkpoint,
                                         rendered=rendered, pad_id=pad_id, lora_r=LORA["r"],
                                         lora_alpha=LORA["alpha"], lora_targets=LORA["targets"])}
    results = run_rows(rows, args)
    results["ratios"] = {**ratios(results, "tempering-lora", "peft-hf-trainer"),
                         "lora_rss_vs_full": ratio(results, "tempering-lora", "tempering-full", "peak_rss_mb"),
                         "lora_checkpointing_rss_vs_full": ratio(results, "tempering-lora-checkpointing",
                                                                 "tempering-full", "peak_rss_mb")}
    return results


def measure_dpo(args, shards: Path, tok: Path) -> dict:
    """DPO peak memory at `small`: full fine-tuning with a live reference copy against LoRA (reference = base)."""
    checkpoint = initial_checkpoint(args.work / "init-small", "small", tok, vocab=32000)
    pairs = preference_pairs(pydoc_chats(args.work / "pydoc_chats.jsonl"), args.work / "pairs.jsonl")
    dpo = ["dpo", "--checkpoint", checkpoint, "--data", pairs, "--seq-len", args.seq_len, "--batch-size", 4,
           "--val-split", "0", "--max-steps", max(4, args.steps // 2), *common_temper_args("fp32")]
    results = run_rows({"dpo-full-live-reference": dpo, "dpo-lora": [*dpo, "--lora-r", LORA["r"]]}, args)
    results["ratios"] = {"lora_rss_vs_full": ratio(results, "dpo-lora", "dpo-full-live-reference", "peak_rss_mb")}
    return results


def measure_experts(args, shards: Path, tok: Path) -> dict:
    """The sequential-expert workflow on the sample corpus's prose and code; val losses per domain."""
    work = args.work / "experts"
    shutil.rmtree(work, ignore_errors=True)
    code = work / "code_shards"
    temper("prep", "--input", args.work / "corpus" / "code", "--tokenizer", tok, "--output", code,
           "--val-fraction", "0.05")
    prose = work / "prose_shards"
    temper("prep", "--input", args.work / "corpus" / "prose", "--tokenizer", tok, "--output", prose,
           "--val-fraction", "0.05")
    shape = ["--preset", "moe_nano", "model.n_experts=2", "model.experts_per_token=2",
             f"model.d_model={args.expert_width}", "model.n_heads=4", "model.n_kv_heads=2",
             f"model.d_ff={2 * args.expert_width}", f"model.n_layers={args.expert_layers}",
             "--seq-len", "128", "--batch-size", "16", "--lr", "2e-3", "--warmup-steps", "20",
             "--val-split", "0", "training.log_steps=50"]
    experts = work / "experts"
    steps = str(args.expert_steps)
    temper("pretrain", "--data", prose, "--tokenizer", tok, "--save-dir", work / "e0", "--active-expert", "0",
           "--expert-checkpoint-dir", experts, "--max-steps", steps, *shape)
    temper("pretrain", "--data", code, "--tokenizer", tok, "--save-dir", work / "e1", "--active-expert", "1",
           "--freeze-shared", "--expert-checkpoint-dir", experts, "--max-steps", steps, *shape)
    identical = expert_unchanged(work / "e0" / "final", work / "e1" / "final", 0)
    temper("merge-experts", "--expert-checkpoint-dir", experts, "--output", work / "merged")
    temper("post-train", "--checkpoint", work / "merged", "--new-dataset", prose, code, "--save-dir", work / "router",
           "--train-only", "router", "--seq-len", "128", "--batch-size", "16", "--lr", "3e-2", "--warmup-steps", "0",
           "--max-steps", str(args.router_steps), "--val-split", "0", "training.log_steps=50")
    losses = {}
    for domain, data in (("prose", prose), ("code", code)):
        expert_run = work / ("e0" if domain == "prose" else "e1")
        losses[domain] = {"expert": val_loss(expert_run / "final", data, expert=0 if domain == "prose" else 1),
                          "merged_before_router_phase": val_loss(work / "merged", data),
                          "merged_after_router_phase": val_loss(work / "router" / "final", data)}
        losses[domain]["ratio_after_vs_expert"] = losses[domain]["merged_after_router_phase"] / losses[domain]["expert"]
    return {"expert_0_bit_identical_after_expert_1_run": identical, "val_loss": losses,
            "expert_steps": args.expert_steps, "router_steps": args.router_steps,
            "model": {"d_model": args.expert_width, "n_layers": args.expert_layers, "n_experts": 2, "top_k": 2}}


def val_loss(checkpoint: Path, shards: Path, expert: int | None = None) -> float:
    """Token-weighted val loss over the whole val split of `shards` (seq 128), optionally routed to one expert."""
    import torch

    from tempering.checkpoint.model_loading import load_model
    from tempering.config.schema import DatasetConfig
    from tempering.data.datasets import open_source
    from tempering.data.packing import PackedSequences, spans_of_documents
    from tempering.training.causal_lm import CausalLM
    from tempering.training.validation import evaluate

    loaded = load_model(checkpoint)
    if expert is not None:
        loaded.model.route_every_token_to(expert)
    source = open_source(DatasetConfig(path=str(shards)), loaded.tokenizer, "val")
    keep = torch.ones(len(source.document_ends), dtype=torch.bool).numpy()
    windows = PackedSequences(spans_of_documents(source.read, source.document_ends, keep), 128)
    return evaluate(loaded.model, [windows], CausalLM(), batch_size=16, device=torch.device("cpu"))["loss"]


def expert_unchanged(first: Path, second: Path, expert: int) -> bool:
    """Whether expert `expert`'s tensors are bit-identical in two checkpoints."""
    from safetensors.torch import load_file

    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    names = [n for n in a if f".experts.{expert}." in n]
    return bool(names) and all(bool((a[n] == b[n]).all()) for n in names)


def initial_checkpoint(out: Path, preset: str, tok: Path, *, vocab: int | None, overrides: dict | None = None) -> Path:
    """The seeded preset as a checkpoint (what `temper pretrain --seed 0` builds), reused when there."""
    if (out / "model.safetensors").exists():
        return out
    import torch

    from tempering.checkpoint.io import save_checkpoint
    from tempering.models.family import SpecialTokenIds
    from tempering.models.registry import find_preset
    from tempering.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok)
    family, preset_arch = find_preset(preset)
    arch = preset_arch.with_overrides(vocab_size=vocab or tokenizer.vocab_size, **(overrides or {}))
    torch.manual_seed(0)
    model = family.build(arch)
    special = SpecialTokenIds(bos_id=tokenizer.bos_id, eos_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
    save_checkpoint(out, weights=model.export_state_dict(), hf_config=family.to_hf_config(arch, dropout=0.0,
                                                                                         special=special),
                    meta={"step": 0, "tokenizer_fingerprint": tokenizer.fingerprint, "preset": preset,
                          "family": family.name, "source_checkpoint": None, "post_training": False},
                    generation_config=family.generation_config(special), tokenizer_dir=tok)
    return out


def render_chats(chats: Path, tok: Path, out: Path, seq_len: int) -> tuple[Path, int]:
    """The chats as Tempering's SFT renders them (chatml, loss on assistant tokens), one JSON row each."""
    from tempering.data.chat import (
        get_template,
        load_conversations,
        render_conversation,
        required_special_tokens,
    )
    from tempering.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok)
    template = get_template("chatml", tokenizer.path)
    missing = [t for t in required_special_tokens(template) if tokenizer.tokenizer.token_to_id(t) is None]
    tokenizer = tokenizer.with_special_tokens(missing) if missing else tokenizer
    lines = []
    for conversation in load_conversations(chats):
        example = render_conversation(conversation, template, tokenizer, max_seq_length=seq_len)
        if example is not None:
            lines.append(json.dumps({"input_ids": example.input_ids.tolist(), "labels": example.labels.tolist()}))
    out.write_text("\n".join(lines) + "\n")
    return out, tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id


def preference_pairs(chats: Path, out: Path) -> Path:
    """Prompt/chosen/rejected pairs from the chats: chosen its answer, rejected the next chat's."""
    records = [json.loads(line) for line in chats.read_text().splitlines() if line.strip()]
    lines = [json.dumps({"prompt": a["messages"][0]["content"], "chosen": a["messages"][1]["content"],
                         "rejected": b["messages"][1]["content"]}) for a, b in zip(records, records[1:], strict=False)]
    out.write_text("\n".join(lines) + "\n")
    return out


def peer_spec(module: str, args, precision: str, **extra) -> dict:
    """A peer row: its module and spec."""
    return {"module": module, "spec": {**OPTIMIZER, "steps": args.steps, "batch_size": args.batch_size,
                                       "seq_len": args.seq_len, "seed": 0, "precision": precision,
                                       **{k: str(v) if isinstance(v, Path) else v for k, v in extra.items()}}}


def run_rows(rows: dict, args) -> dict:
    """Run every row --rounds times (in turn); median tokens/s, step time and peak RSS per row."""
    rows = {name: row for name, row in rows.items() if not args.rows or name in args.rows}
    raw = {name: [] for name in rows}
    for round_index in range(args.rounds):
        for name, row in rows.items():
            wait_for_quiet_cpu(args.quiet_wait_s, 0.15)
            raw[name].append(run_once(name, row, args, round_index))
            print(f"{name} round {round_index + 1}: {raw[name][-1]}", flush=True)
    return {name: summarise(runs) for name, runs in raw.items()}


def run_once(name: str, row, args, round_index: int) -> dict:
    """One row run in a child process."""
    run_dir = args.work / "runs" / f"{name}-{round_index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if isinstance(row, dict):
        spec = {**row["spec"], "out_dir": str(run_dir / "out")}
        (run_dir / "spec.json").write_text(json.dumps(spec))
        command, metrics = [sys.executable, "-m", row["module"], str(run_dir / "spec.json")], None
    else:
        command = [sys.executable, "-m", "tempering", *map(str, row), "--save-dir", str(run_dir / "run")]
        metrics = run_dir / "run" / "metrics.jsonl"
    env = child_env(args.work)
    if args.mmap_threshold:
        env["TEMPERING_MMAP_THRESHOLD"] = str(args.mmap_threshold)
    child = run_child(command, env, run_dir / "stderr.txt", metrics)
    if child["returncode"] != 0:
        tail = (run_dir / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:]
        return {"status": f"failed: {' | '.join(tail)[-300:]}"}
    if metrics is not None:
        ends, tokens = temper_steps(metrics)
    else:
        done = next((r for r in child["events"] if r.get("event") == "done"), {})
        ends, tokens = done.get("step_end_s", []), done.get("step_tokens", [])
    stats = step_stats(ends, tokens, args.warmup) or {}
    return {"status": "ok", **stats, "peak_rss_mb": child["peak_rss_mb"], "cpu_s": child["cpu_s"],
            "cpu_pressure": child["cpu_pressure"]}


def summarise(runs: list[dict]) -> dict:
    """Medians over the rounds that ran."""
    done = [r for r in runs if r.get("status") == "ok" and r.get("tokens_per_s")]
    if not done:
        return {"status": runs[0].get("status") if runs else "not run"}
    return {"status": "ok", **{key: statistics.median(r[key] for r in done)
                               for key in ("tokens_per_s", "median_step_s", "peak_rss_mb", "cpu_s")},
            "cpu_pressure": [round(r.get("cpu_pressure") or 0, 3) for r in done]}


def ratio(results: dict, ours: str, theirs: str, metric: str) -> float | None:
    """ours / theirs for one metric, None when either row failed."""
    a, b = results.get(ours, {}), results.get(theirs, {})
    return a[metric] / b[metric] if a.get("status") == b.get("status") == "ok" else None


def ratios(results: dict, ours: str, theirs: str) -> dict:
    """tokens/s and peak RSS of `ours` over `theirs`."""
    return {"tokens_per_s": ratio(results, ours, theirs, "tokens_per_s"),
            "peak_rss": ratio(results, ours, theirs, "peak_rss_mb")}


def summary(report: dict) -> str:
    """A Markdown summary of the measured parts."""
    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['nproc']} cores, torch "
             f"{report['machine']['torch']}. Command: `{report['command']}`", ""]
    tables = [(f"moe {p}", rows) for p, rows in report.get("moe", {}).items()]
    tables += [(part, report[part]) for part in ("lora", "dpo") if part in report]
    for title, rows in tables:
        lines += [f"**{title}**", "", "| row | tokens/s | step s | CPU s (whole run) | peak RSS MB |",
                  "|---|---|---|---|---|"]
        for name, row in rows.items():
            if name == "ratios":
                continue
            if row.get("status") != "ok":
                lines.append(f"| {name} | {row.get('status')} | | | |")
                continue
            lines.append(f"| {name} | {row['tokens_per_s']:,.0f} | {row['median_step_s']:.3f} | {row['cpu_s']:.1f} | "
                         f"{row['peak_rss_mb']:,.0f} |")
        lines += ["", "ratios: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                               for k, v in rows.get("ratios", {}).items()}), ""]
    if "experts" in report:
        lines += ["**sequential experts**", "", "```", json.dumps(report["experts"], indent=2), "```"]
    return "\n".join(lines)


def temper(*args) -> None:
    """Run a temper command, failing loudly."""
    subprocess.run([sys.executable, "-m", "tempering", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


PARTS = {"moe": measure_moe, "lora": measure_lora, "dpo": measure_dpo, "experts": measure_experts}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                        help="Which parts to run (see the module docstring); default all.")
    parser.add_argument("--steps", type=int, default=12, help="Training steps of each speed/memory row.")
    parser.add_argument("--warmup", type=int, default=3, help="First steps of a row left out of its median tokens/s.")
    parser.add_argument("--rounds", type=int, default=1, help="Times each part's rows run, in turn.")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="Precisions of the moe part (lora and dpo run fp32).")
    parser.add_argument("--seq-len", type=int, default=256, help="Tokens per row (window, or longest chat).")
    parser.add_argument("--batch-size", type=int, default=8, help="Rows per step (moe and lora parts).")
    parser.add_argument("--expert-steps", type=int, default=300, help="Steps of each expert run (experts part).")
    parser.add_argument("--router-steps", type=int, default=100, help="Steps of the router-only phase after the merge.")
    parser.add_argument("--expert-width", type=int, default=128, help="d_model of the expert-workflow model.")
    parser.add_argument("--expert-layers", type=int, default=4, help="Layers of the expert-workflow model.")
    parser.add_argument("--quiet-wait-s", type=float, default=60,
                        help="Before each row, wait up to this long for the CPU to go quiet.")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="Run only these rows of the parts (e.g. "
                        "tempering-full tempering-lora); ratios need both of their rows.")
    parser.add_argument("--mmap-threshold", type=int, default=0, metavar="BYTES",
                        help="Run temper with TEMPERING_MMAP_THRESHOLD=BYTES (glibc's mmap threshold pinned: less "
                             "memory, slower steps; e.g. 131072 or 1048576); the peer rows are unaffected. "
                             "Default 0: glibc's own.")
    parser.add_argument("--pin-mmap-threshold", action="store_const", const=131072, dest="mmap_threshold",
                        help="Same as --mmap-threshold 131072.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tempering-moe-lora",
                        help="Working folder: tokenizer, shards, initial checkpoints, runs (reused).")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "moe_lora.json",
                        help="Where the JSON results go (a Markdown summary is printed too).")
    return parser.parse_args()


if __name__ == "__main__":
    main()

"""The one training loop every stage shares (pretrain, post-train, SFT, DPO).

`train(setup)` reads top to bottom: resume, then per optimizer step — learning rate,
micro-batches, forward, loss normalised by the supervised tokens of the whole step,
backward, clip, step — then log, evaluate, save, stop. Stages differ only in the
`TrainingSetup` they assemble (objective, data, model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from tempering.checkpoint.io import load_checkpoint
from tempering.checkpoint.manager import CheckpointManager
from tempering.checkpoint.rng import capture_rng_state, restore_rng_state
from tempering.config.schema import Config
from tempering.data.packing import PackedSequences, SequenceBatches
from tempering.evaluation.perplexity import evaluate_loss
from tempering.tracking.console import console
from tempering.tracking.metrics import MetricsLog, truncate_after_step
from tempering.tracking.progress import TrainingProgress
from tempering.training.device import autocast
from tempering.training.objectives import Objective
from tempering.training.optim import learning_rate_at, set_learning_rate
from tempering.training.run_dir import write_json_atomic


@dataclass
class TrainState:
    """Counters a resume restores, besides model, optimizer and RNG."""

    step: int = 0  # optimizer steps done
    micro_batch: int = 0  # global index of the next micro-batch to read
    tokens_seen: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    last_val: dict = field(default_factory=dict)
    first_val: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass
class TrainingSetup:
    """Everything `train` needs, assembled by a stage (see `training/pretrain.py`)."""

    config: Config
    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    count_tokens: Callable[[torch.Tensor], int]
    train_batches: SequenceBatches
    val_sets: dict[str, list[PackedSequences]]  # split name ("val" or "val:<name>") -> windows
    device: torch.device
    total_steps: int
    length_reason: str  # why training ends when it runs to total_steps: max_steps, epochs, ...
    hf_config: dict
    tokenizer_dir: Path | None
    meta: dict  # extra checkpoint meta: tokenizer_fingerprint, source_checkpoint, post_training, ...
    best_split: str = "val"  # the val split whose loss drives best/ and early stopping


def train(setup: TrainingSetup) -> dict:
    """Run (or resume) training to its end; return the summary written to summary.json."""
    cfg = setup.config.training
    model, optimizer, device = setup.model, setup.optimizer, setup.device
    manager = CheckpointManager(setup.run_dir, cfg.save_total_limit)
    state = _resume(setup, manager)
    summary_file = setup.run_dir / "summary.json"
    if summary_file.exists() and state.step > 0:
        finished = json.loads(summary_file.read_text(encoding="utf-8"))
        if finished.get("final_step") == state.step:  # ran to its end (or stopped early) already
            console.print(f"{setup.run_dir} already finished at step {state.step} ({finished['stop_reason']}); "
                          "nothing to do (--restart starts over)")
            return finished
    metrics = MetricsLog(setup.run_dir / "metrics.jsonl")
    step_loss = torch.compile(setup.objective) if cfg.compile else setup.objective
    amp = partial(autocast, device, cfg.precision)
    accumulation = cfg.accumulation_steps
    batches_per_epoch = setup.train_batches.batches_per_epoch
    trainable = [p for p in model.parameters() if p.requires_grad]
    save = partial(_save, setup, manager)
    stop_reason = setup.length_reason
    started = time.perf_counter() - state.elapsed_s
    window_start, window_tokens = time.perf_counter(), 0
    window_loss = torch.zeros((), dtype=torch.float64, device=device)
    epoch_loss, epoch_tokens = torch.zeros((), dtype=torch.float64, device=device), 0

    if not state.first_val and setup.val_sets:
        state.first_val = _evaluate(setup, amp)
        state.last_val = state.first_val
        metrics.write({"step": state.step, "epoch": 0.0, **_flatten_val(state.first_val)})
    model.train()
    with TrainingProgress(setup.total_steps, state.step) as progress:
        while state.step < setup.total_steps:
            lr = learning_rate_at(state.step, setup.total_steps, cfg)
            set_learning_rate(optimizer, lr)

            # One optimizer step: every micro-batch's summed loss is divided by the
            # supervised tokens of the whole step, so the gradient equals one big batch.
            micro_batches = [torch.from_numpy(setup.train_batches.batch(state.micro_batch + i)).to(device)
                             for i in range(accumulation)]
            num_tokens = sum(setup.count_tokens(tokens) for tokens in micro_batches)
            step_loss_sum = accumulate_gradients(model, step_loss, micro_batches, num_tokens, amp)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            epoch_before = state.micro_batch // batches_per_epoch
            state.step += 1
            state.micro_batch += accumulation
            state.tokens_seen += num_tokens
            epoch_ended = state.micro_batch // batches_per_epoch > epoch_before
            window_loss += step_loss_sum
            window_tokens += num_tokens
            epoch_loss += step_loss_sum
            epoch_tokens += num_tokens
            progress.advance(tokens=num_tokens, lr=lr)

            # Log: the only host synchronisation of a step happens here, every log_steps.
            if state.step % cfg.log_steps == 0 or state.step == setup.total_steps or epoch_ended:
                now = time.perf_counter()
                loss = (window_loss / window_tokens).item()
                record = {"step": state.step, "epoch": round(state.micro_batch / batches_per_epoch, 4),
                          "split": "train", "loss": loss, "ppl": math.exp(min(loss, 50.0)), "lr": lr,
                          "grad_norm": grad_norm.item(), "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                          "tokens_seen": state.tokens_seen, "time_s": round(now - started, 3)}
                metrics.write(record)
                progress.show(loss=loss, tokens_per_s=record["tokens_per_s"])
                window_start, window_tokens = now, 0
                window_loss.zero_()

            # Evaluate every eval_steps, at each epoch end, and at the end of training.
            evaluated = (cfg.eval_steps and state.step % cfg.eval_steps == 0) or epoch_ended \
                or state.step == setup.total_steps
            improved = False
            if evaluated and setup.val_sets:
                state.last_val = _evaluate(setup, amp)
                metrics.write({"step": state.step, "epoch": round(state.micro_batch / batches_per_epoch, 4),
                               **_flatten_val(state.last_val)})
                improved = _track_best(state, setup.best_split)
                if improved:
                    save("best", state)
            if epoch_ended:
                train_loss = (epoch_loss / max(epoch_tokens, 1)).item()
                progress.print(_epoch_line(epoch_before + 1, train_loss, state.last_val if evaluated else {}, improved))
                epoch_loss.zero_()
                epoch_tokens = 0

            if cfg.save_steps and state.step % cfg.save_steps == 0:
                state.elapsed_s = time.perf_counter() - started
                save("periodic", state)
            if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
                stop_reason = "early_stopping"
                metrics.write({"event": "early_stop", "step": state.step,
                               "evals_without_improvement": state.evals_without_improvement})
                progress.print(f"early stopping: no val improvement in {state.evals_without_improvement} evaluations")
                break

    state.elapsed_s = time.perf_counter() - started
    save("final", state)
    metrics.close()
    summary = _summary(setup, state, stop_reason)
    write_json_atomic(summary_file, summary)
    return summary


def accumulate_gradients(model: nn.Module, objective: Objective, micro_batches: list[torch.Tensor],
                         num_tokens: int, amp=contextlib.nullcontext) -> torch.Tensor:
    """Backpropagate each micro-batch's summed loss divided by the step's token count; return the loss sum."""
    step_loss_sum = torch.zeros((), dtype=torch.float64, device=micro_batches[0].device)
    for tokens in micro_batches:
        with amp():
            loss_sum, _ = objective(model, tokens)
        (loss_sum / num_tokens).backward()
        step_loss_sum += loss_sum.detach().double()
    return step_loss_sum


def _resume(setup: TrainingSetup, manager: CheckpointManager) -> TrainState:
    """Restore model, optimizer, RNG and counters from the newest complete checkpoint, if any."""
    path = manager.latest_resumable()
    if path is None:
        return TrainState()
    checkpoint = load_checkpoint(path)
    setup.model.load_exported_state_dict(checkpoint.load_weights(device=str(setup.device)))
    trainer_state = checkpoint.load_trainer_state()
    setup.optimizer.load_state_dict(trainer_state["optimizer"])
    restore_rng_state(trainer_state["rng"])
    state = TrainState(**trainer_state["train_state"])
    truncate_after_step(setup.run_dir / "metrics.jsonl", state.step)
    console.print(f"resuming from {path} at step {state.step}/{setup.total_steps}")
    return state


def _evaluate(setup: TrainingSetup, amp) -> dict[str, dict]:
    cfg = setup.config.training
    return {split: evaluate_loss(setup.model, sequences, setup.objective, batch_size=cfg.batch_size,
                                 device=setup.device, max_batches=cfg.eval_max_batches, autocast=amp)
            for split, sequences in setup.val_sets.items()}


def _flatten_val(results: dict[str, dict]) -> dict:
    """One metrics record per evaluation: `split` is the driving split; others get prefixed keys."""
    record: dict = {}
    for index, (split, values) in enumerate(results.items()):
        if index == 0:
            record.update({"split": split, "loss": values["loss"], "ppl": values["ppl"]})
        else:
            record.update({f"{split}/loss": values["loss"], f"{split}/ppl": values["ppl"]})
    return record


def _track_best(state: TrainState, split: str) -> bool:
    loss = state.last_val[split]["loss"]
    if state.best_val_loss is None or loss < state.best_val_loss:
        state.best_val_loss, state.best_step = loss, state.step
        state.evals_without_improvement = 0
        return True
    state.evals_without_improvement += 1
    return False


def _save(setup: TrainingSetup, manager: CheckpointManager, kind: str, state: TrainState) -> Path:
    """Write a periodic, best or final checkpoint with everything a resume needs."""
    val = state.last_val.get(setup.best_split, {})
    meta = {**setup.meta, "step": state.step,
            "epoch": round(state.micro_batch / setup.train_batches.batches_per_epoch, 4),
            "val_loss": val.get("loss"), "val_ppl": val.get("ppl"), "model_type": "llama",
            "stage": setup.config.stage}
    trainer_state = {"optimizer": setup.optimizer.state_dict(), "scheduler": {"step": state.step},
                     "scaler": {}, "rng": capture_rng_state(), "train_state": dataclasses.asdict(state)}
    payload = dict(weights=setup.model.export_state_dict(), hf_config=setup.hf_config, meta=meta,
                   trainer_state=trainer_state, tokenizer_dir=setup.tokenizer_dir)
    if setup.config.debug.kill_during_save_at_step == state.step:
        payload["on_partial_write"] = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if kind == "periodic":
        return manager.save_periodic(state.step, **payload)
    return manager.save_best(**payload) if kind == "best" else manager.save_final(**payload)


def _epoch_line(epoch: int, train_loss: float, val: dict, improved: bool) -> str:
    parts = [f"epoch {epoch}: train loss {train_loss:.4f} ppl {math.exp(min(train_loss, 50.0)):.2f}"]
    for split, values in val.items():
        parts.append(f"{split} loss {values['loss']:.4f} ppl {values['ppl']:.2f}")
    return " | ".join(parts) + ("  ★ new best" if improved else "")


def _summary(setup: TrainingSetup, state: TrainState, stop_reason: str) -> dict:
    return {"stop_reason": stop_reason, "final_step": state.step, "total_steps": setup.total_steps,
            "best_step": state.best_step, "best_val_loss": state.best_val_loss,
            "best_val_ppl": math.exp(min(state.best_val_loss, 50.0)) if state.best_val_loss is not None else None,
            "val_at_start": state.first_val, "val_at_end": state.last_val,
            "tokens_seen": state.tokens_seen, "wall_time_s": round(state.elapsed_s, 3)}

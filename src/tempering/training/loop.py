"""The one training loop every stage shares (pretrain, post-train, SFT, DPO).

`train(setup)` reads top to bottom: resume, then per optimizer step — what trains (progressive
unfreezing), learning rate, micro-batches, forward, loss normalised by the objective's
supervised units (tokens, pairs, ...) of the whole optimizer step, backward, clip, a
finiteness check that rolls back to the last good state, step — then log, evaluate (the
objective's best metric picks best/ and drives early stopping), save, stop. Stages differ
only in the `TrainingSetup` they hand over (the assembly of model, optimizer and objective;
data; starting state). The loop never names a model family: checkpoints get the family's
config.json, generation_config.json and meta from the setup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tempering.checkpoint.atomic import TMP_PREFIX
from tempering.checkpoint.io import load_checkpoint, save_checkpoint
from tempering.checkpoint.manager import CheckpointManager
from tempering.checkpoint.paths import INFERENCE_DIR, PERIODIC_DIR, SHARDED_DIR, step_dir_name
from tempering.checkpoint.resolution import cache_file_path, run_id_of
from tempering.checkpoint.rng import capture_rng_state, restore_rng_state
from tempering.checkpoint.sharded import load_sharded, save_sharded
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.json_files import write_json_atomic
from tempering.tracking.console import console, warn
from tempering.tracking.fanout import RecordFanOut, open_tracking
from tempering.tracking.metrics import truncate_after_step
from tempering.tracking.progress import TrainingProgress
from tempering.tracking.telemetry import SystemTelemetry
from tempering.training.adamw import AdamW
from tempering.training.assembly import Assembly
from tempering.training.compiling import compiled_step, should_compile
from tempering.training.device import autocast, precision_hint
from tempering.training.objective import AUXILIARY_LOSS, NumpyBatch, Objective
from tempering.training.optim import learning_rate_at, set_learning_rate
from tempering.training.parallel import (
    Parallel,
    full_state,
    full_value,
    lost_peers,
    sharded_optimizer_state,
)
from tempering.training.recovery_point import capture_start, restore_start
from tempering.training.run_dir import training_started
from tempering.training.stop_signals import Preempted, StopSignals
from tempering.training.validation import evaluate


@dataclass
class TrainState:
    """Counters a resume restores, besides model, optimizer and RNG."""

    step: int = 0  # optimizer steps done
    micro_batch: int = 0  # global index of the next micro-batch to read
    tokens_seen: int = 0
    best_val_loss: float | None = None  # validation loss at best_step
    best_step: int | None = None
    best_value: float | None = None  # the objective's best metric at best_step (the loss, F1, WER, ...)
    evals_without_improvement: int = 0
    last_val: dict = field(default_factory=dict)
    first_val: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    recoveries: int = 0
    skipped_micro_batches: list[int] = field(default_factory=list)  # first micro-batch of each skipped window
    nan_injected: bool = False


    @classmethod
    def from_saved(cls, saved: dict, objective: Objective) -> TrainState:
        """Restore counters from trainer_state.pt (checkpoints older than best_value kept only the loss)."""
        state = cls(**saved)
        if state.best_value is None and objective.best_metric.name == "loss":
            state.best_value = state.best_val_loss
        return state


@dataclass
class TrainingSetup:
    """Everything `train` needs, handed over by a stage (see `training/pretrain.py`)."""

    config: Config
    run_dir: Path
    assembly: Assembly  # model, optimizer, objective and trainable rules (training/assembly.py)
    train_batches: object  # .batch(micro_batch) -> NumpyBatch, .batches_per_epoch
    val_sets: dict[str, list]  # split ("val", "val:new", ...) -> sets with .eval_batches(batch_size)
    device: torch.device
    total_steps: int
    length_reason: str  # why training ends when it runs to total_steps: max_steps, epochs, ...
    hf_config: dict  # every checkpoint's config.json
    tokenizer_dir: Path | None
    meta: dict  # extra checkpoint meta: tokenizer_fingerprint, source_checkpoint, post_training, family, ...
    generation_config: dict | None = None  # every checkpoint's generation_config.json (families that generate)
    best_split: str = "val"  # the val split whose best metric drives best/ and early stopping
    initial_state: TrainState = field(default_factory=TrainState)  # post-training starts at the source's step
    schedule_offset: int = 0  # steps of the LR schedule already behind this run (a continued scheduler)
    static_shapes: bool = False  # every micro-batch has the same shapes (training.compile=auto may compile)

    @property
    def model(self) -> nn.Module:
        """The model being trained."""
        return self.assembly.model

    @property
    def optimizer(self) -> AdamW:
        """The run's AdamW."""
        return self.assembly.optimizer

    @property
    def objective(self) -> Objective:
        """The run's objective."""
        return self.assembly.objective


def train(setup: TrainingSetup) -> dict:
    """Run (or resume) training to its end; return the summary written to summary.json."""
    cfg = setup.config.training
    model, optimizer, device = setup.model, setup.optimizer, setup.device
    manager = CheckpointManager(setup.run_dir, cfg.save_total_limit)
    state = _resume(setup, manager) or dataclasses.replace(setup.initial_state)
    summary_file = setup.run_dir / "summary.json"
    if summary_file.exists() and state.step > setup.initial_state.step:
        finished = json.loads(summary_file.read_text(encoding="utf-8"))
        if finished.get("final_step") == state.step:  # ran to its end (or stopped early) already
            console.print(f"{setup.run_dir} already finished at step {state.step} ({finished['stop_reason']}); "
                          "nothing to do (--restart starts over)")
            return finished
    setup.assembly.print_trainable(cfg)
    # metrics.jsonl plus the configured trackers (TensorBoard, MLflow, W&B), rank 0 only.
    metrics = open_tracking(setup.config, setup.run_dir, first_step=state.step + 1, meta=setup.meta)
    telemetry = SystemTelemetry(device, every_steps=setup.config.tracking.telemetry_steps)
    best = setup.objective.best_metric
    metrics.write({"event": "start", "step": state.step, "total_steps": setup.total_steps,
                   "best_split": setup.best_split, "best_metric": best.name, "best_metric_mode": best.mode})
    hint = precision_hint(device, cfg.precision)
    if hint:
        console.print(f"[dim]hint: {hint}[/dim]")
    schedule_length = setup.total_steps - setup.initial_state.step + setup.schedule_offset
    if cfg.warmup_steps > schedule_length:
        warn(f"training.warmup_steps ({cfg.warmup_steps}) is longer than the run's {schedule_length} steps: warmup "
             "is cut to the whole run, the peak learning rate reached only at its last step (lower --warmup-steps)")
    step_loss = setup.objective
    planned_steps = setup.total_steps - setup.initial_state.step  # this run's own, fixed across resumes
    if should_compile(cfg.compile, total_steps=planned_steps, static_shapes=setup.static_shapes, device=device):
        console.print(f"compiling the training step (training.compile={str(cfg.compile).lower()}); "
                      "the first step takes longer")
        step_loss = compiled_step(setup.objective, cache_file_path(setup.config).parent)
    amp = partial(autocast, device, cfg.precision)
    parallel, module = setup.assembly.parallel, setup.assembly.module
    accumulation = cfg.accumulation_steps
    stride = accumulation * parallel.world_size  # global micro-batches per optimizer step
    batches_per_epoch = setup.train_batches.batches_per_epoch
    save = partial(_save, setup, manager, metrics)
    good_state = (capture_start(setup.model, setup.optimizer, state, setup.run_dir)
                  if cfg.max_recoveries and manager.latest_resumable() is None else None)
    stop_reason = setup.length_reason
    started = time.perf_counter() - state.elapsed_s
    window = _Window(device)
    epoch_loss, epoch_units = torch.zeros((), dtype=torch.float64, device=device), 0

    if not state.first_val and setup.val_sets:
        state.first_val = state.last_val = _evaluate(setup, amp)
        console.print("before training: " + _val_line(state.first_val, best.name))
        _write_val(metrics, state, batches_per_epoch, setup.objective.unit)
    model.train()
    training_started(setup.run_dir)  # from here on, an error keeps what the run wrote
    peers = partial(lost_peers, parallel, setup.run_dir, cfg.distributed_timeout_minutes)
    with peers(), StopSignals() as stop, TrainingProgress(setup.total_steps, state.step) as progress:
        while state.step < setup.total_steps:
            if state.micro_batch in state.skipped_micro_batches:  # a window that produced NaN: never again
                state.micro_batch += stride
                continue
            if setup.assembly.update_trainable is not None:  # unfreezing counts this run's own steps
                opened = setup.assembly.update_trainable(state.step - setup.initial_state.step)
                if opened:  # logged as the first optimizer step that trains them
                    metrics.write({"event": "unfreeze", "step": state.step + 1, "parameters": opened})
                    progress.print(f"step {state.step + 1}: unfreezing {opened}")
            lr = _learning_rate(setup, state.step)
            set_learning_rate(optimizer, lr)

            # One optimizer step: each micro-batch's summed loss is divided by the supervised
            # units of the whole step, so the gradient equals that of one big batch.
            with telemetry.fetching_data():
                batches = [setup.train_batches.batch(index)
                           for index in parallel.micro_batches(state.micro_batch, accumulation)]
            num_units = parallel.sum_int(sum(setup.objective.count_units(batch) for batch in batches), device)
            inject_nan = setup.config.debug.inject_nan_at_step == state.step + 1 and not state.nan_injected
            step_loss_sum, extras = accumulate_gradients(model, step_loss, [_to_device(b, device) for b in batches],
                                                         num_units, amp, inject_nan=inject_nan, parallel=parallel,
                                                         module=module)
            state.nan_injected |= inject_nan
            grad_norm = full_value(torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.grad is not None], cfg.grad_clip or math.inf))
            # Non-finite loss or gradients: roll back to the last good state, skip this window. The
            # loss is summed over ranks, so every rank takes the same branch.
            if not torch.isfinite(step_loss_sum + grad_norm).item():
                optimizer.zero_grad(set_to_none=True)
                state = _recover(setup, manager, metrics, state, good_state, stride)
                progress.reset(state.step)
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            epoch_before = state.micro_batch // batches_per_epoch
            state.step += 1
            state.micro_batch += stride
            num_tokens = parallel.sum_int(sum(int(b.get("num_tokens", 0)) for b in batches), device) or num_units
            state.tokens_seen += num_tokens
            epoch_ended = state.micro_batch // batches_per_epoch > epoch_before
            window.add(step_loss_sum, num_units, num_tokens, extras)
            if setup.config.debug.kill_at_step == state.step and setup.config.debug.kill_rank == parallel.rank:
                os.kill(os.getpid(), signal.SIGKILL)  # debug: a crash of this one process mid-run
            epoch_loss += step_loss_sum
            epoch_units += num_units
            progress.advance(lr=lr)

            # Log: the only host synchronisation of a healthy step besides the finiteness check.
            logged = state.step % cfg.log_steps == 0 or state.step == setup.total_steps or epoch_ended
            if logged:
                record = window.record(state, lr, grad_norm, batches_per_epoch, started, setup.objective.perplexity)
                metrics.write(record)
                progress.show(loss=record["loss"], tokens_per_s=record["tokens_per_s"])
            if telemetry.due(state.step, logged):
                metrics.write(telemetry.record(state.step))

            # Evaluate every eval_steps, at each epoch end, and at the end of training.
            evaluated = bool(cfg.eval_steps and state.step % cfg.eval_steps == 0) or epoch_ended \
                or state.step == setup.total_steps
            improved = False
            interrupted = False
            if evaluated and setup.val_sets:
                eval_started = time.perf_counter()
                # A signal abandons the evaluation (the checkpoint below comes within one batch), except
                # the last one: a resumed run would not evaluate again before writing final/.
                val = _evaluate(setup, amp, stop if state.step < setup.total_steps else None)
                eval_s = time.perf_counter() - eval_started
                window.start += eval_s  # tokens/s counts training time only
                telemetry.exclude(eval_s)
                interrupted = val is None
                if interrupted:
                    metrics.write({"event": "eval_interrupted", "step": state.step})
                    progress.print(f"step {state.step}: evaluation interrupted by a signal; checkpointing")
                else:
                    state.last_val = val
                    _write_val(metrics, state, batches_per_epoch, setup.objective.unit)
                    improved = _track_best(state, setup.best_split, setup.objective)
                    progress.print(f"step {state.step}: " + _val_line(state.last_val, best.name)
                                   + ("  ★ new best" if improved else ""))
                    if improved:
                        save("best", state)
            if epoch_ended:
                train_loss = (epoch_loss / max(epoch_units, 1)).item()
                progress.print(_epoch_line(epoch_before + 1, train_loss,
                                           state.last_val if evaluated and not interrupted else {}, improved,
                                           best.name, setup.objective.perplexity))
                epoch_loss.zero_()
                epoch_units = 0

            every = setup.config.checkpointing.inference_checkpoint_steps
            if every and every > 0 and state.step % every == 0:
                _save_inference(setup, metrics, state)
            saving = bool(cfg.save_steps and state.step % cfg.save_steps == 0)
            stopping = parallel.any(stop.requested(), device)  # a signal (or stop file) on any rank stops them all
            if saving or stopping:
                state.elapsed_s = time.perf_counter() - started
                # The checkpoint becomes the recovery point. The start's copy goes first, so the disk space of
                # its unlinked file is free for this save; a save that fails ends the run anyway.
                good_state = None
                save("periodic", state)
            if stopping:  # SIGTERM / SIGUSR1 / SIGHUP: checkpointed above, now stop
                signal_name = stop.received or "a signal to another rank"
                metrics.write({"event": "preempted", "step": state.step, "signal": signal_name})
                metrics.close()
                raise Preempted(f"stopped by {signal_name} at step {state.step} after writing a checkpoint in "
                                f"{setup.run_dir}; re-run the same command to resume")
            if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
                stop_reason = "early_stopping"
                metrics.write({"event": "early_stop", "step": state.step,
                               "evals_without_improvement": state.evals_without_improvement})
                progress.print(f"early stopping: no val improvement in {state.evals_without_improvement} evaluations")
                break

    state.elapsed_s = time.perf_counter() - started
    with peers():
        save("final", state)
    summary = _summary(setup, state, stop_reason)
    if setup.assembly.parallel.is_main:
        write_json_atomic(summary_file, summary)
    metrics.close(completed=True)  # trackers get summary.json and the best meta.json
    return summary


def accumulate_gradients(model: nn.Module, objective: Objective, micro_batches: list[dict],
                         num_units: int, amp=contextlib.nullcontext, *, inject_nan: bool = False,
                         parallel: Parallel | None = None, module: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
    """Backpropagate each micro-batch's summed loss divided by the step's units; return the loss sum and extras.

    Extras are an objective's extra metrics (DPO rewards), summed over units like the loss and
    returned as means over the step's units. Under DDP / FSDP (`parallel`, `module`) `num_units`
    counts every rank's units; gradients sync on the last micro-batch only, and the loss is scaled
    by the number of ranks, which DDP and FSDP average over. The returned sums cover every rank.
    """
    step_loss_sum = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    extras: dict[str, torch.Tensor] = {}
    ranks = parallel.world_size if parallel is not None else 1
    for index, batch in enumerate(micro_batches):
        sync = parallel.no_sync(module, last=index == len(micro_batches) - 1) if parallel else contextlib.nullcontext()
        with sync:
            with amp():
                result = module(batch) if module is not None else objective(model, batch)
            loss_sum = result.loss_sum
            if inject_nan:  # debug.inject_nan_at_step: poison this step once
                loss_sum = loss_sum * float("nan")
            auxiliary = result.metrics.get(AUXILIARY_LOSS)  # a model's own losses (MoE router): trained, reported apart
            scaled = (loss_sum if auxiliary is None else loss_sum + auxiliary) / num_units
            (scaled * ranks if ranks > 1 else scaled).backward()
        step_loss_sum += loss_sum.detach().double()
        for name, value in result.metrics.items():  # sums over units, like the loss
            extras[name] = extras.get(name, 0) + value.detach().double() / num_units
    if ranks > 1:
        step_loss_sum = parallel.sum(step_loss_sum)
        extras = {name: parallel.sum(value) for name, value in sorted(extras.items())}
    return step_loss_sum, extras


class _Window:
    """Loss, units (the loss normaliser), tokens and extra metrics since the last train log line."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.units, self.tokens, self.steps, self.extras, self.start = 0, 0, 0, {}, time.perf_counter()

    def add(self, loss_sum: torch.Tensor, units: int, tokens: int, extras: dict) -> None:
        self.loss += loss_sum
        self.units += units
        self.tokens += tokens
        self.steps += 1
        for name, value in extras.items():
            self.extras[name] = self.extras.get(name, 0) + value

    def record(self, state: TrainState, lr: float, grad_norm: torch.Tensor, batches_per_epoch: int,
               started: float, perplexity: bool) -> dict:
        now = time.perf_counter()
        loss = (self.loss / max(self.units, 1)).item()
        record = {"step": state.step, "epoch": round(state.micro_batch / batches_per_epoch, 4), "split": "train",
                  "loss": loss}
        if perplexity:
            record["ppl"] = math.exp(min(loss, 50.0))
        record.update({"lr": lr, "grad_norm": grad_norm.item(), "tokens_per_s": self.tokens / max(now - self.start, 1e-9),
                       "tokens_seen": state.tokens_seen, "time_s": round(now - started, 3)})
        record.update({name: (value / self.steps).item() for name, value in self.extras.items()})
        self._reset()
        return record


def _learning_rate(setup: TrainingSetup, step: int) -> float:
    """LR for a step, on a schedule that may have started before this run (continued post-training)."""
    start = setup.initial_state.step
    return learning_rate_at(step - start + setup.schedule_offset,
                            setup.total_steps - start + setup.schedule_offset, setup.config.training)


def _to_device(batch: NumpyBatch, device: torch.device) -> dict:
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()
            if isinstance(v, np.ndarray)}


def _resume(setup: TrainingSetup, manager: CheckpointManager) -> TrainState | None:
    """Restore model, optimizer, RNG and counters from the newest complete checkpoint, if any."""
    path = manager.latest_resumable()
    if path is None:
        return None
    state = _load_state(setup, path)
    if setup.assembly.parallel.is_main:
        truncate_after_step(setup.run_dir / "metrics.jsonl", state.step)
    console.print(f"resuming from {path} at step {state.step}/{setup.total_steps}")
    return state


def _load_state(setup: TrainingSetup, path: Path) -> TrainState:
    checkpoint = load_checkpoint(path)
    trainer_state = checkpoint.load_trainer_state()
    if checkpoint.is_sharded:  # an FSDP run's periodic checkpoint: DCP reshards it to this run's ranks
        load_sharded(setup.model, setup.optimizer, checkpoint.path / SHARDED_DIR)
    else:
        setup.assembly.load_checkpoint_weights(checkpoint, setup.device)
        setup.optimizer.load_state_dict(sharded_optimizer_state(trainer_state["optimizer"], setup.optimizer))
    rank, rngs = setup.assembly.parallel.rank, trainer_state.get("rng_ranks") or [trainer_state["rng"]]
    if rank < len(rngs):
        restore_rng_state(rngs[rank])
    else:  # more ranks than saved: a fresh stream of its own, a function of (seed, step, rank)
        torch.manual_seed(setup.config.run.seed + 1_000_003 * rank + trainer_state["train_state"]["step"])
    return TrainState.from_saved(trainer_state["train_state"], setup.objective)


def _recover(setup: TrainingSetup, manager: CheckpointManager, metrics: RecordFanOut, state: TrainState,
             good_state: dict | None, accumulation: int) -> TrainState:
    """Reload the newest good state and mark the offending micro-batch window to be skipped."""
    bad_step, bad_window = state.step + 1, state.micro_batch
    if state.recoveries >= setup.config.training.max_recoveries:
        metrics.write({"event": "diverged", "step": bad_step, "recoveries": state.recoveries})
        metrics.close()
        raise UserError(f"non-finite loss or gradient at step {bad_step} after {state.recoveries} recoveries "
                        f"(training.max_recoveries={setup.config.training.max_recoveries}); checkpoints in "
                        f"{setup.run_dir} are intact — lower --lr or raise training.max_recoveries")
    path = manager.latest_resumable()
    if path is not None:
        restored = _load_state(setup, path)
    else:
        restored = restore_start(setup.model, setup.optimizer, good_state)
    # What happened after the restored point stays known: recoveries, skips, the one-off injection.
    restored.recoveries = state.recoveries + 1
    restored.skipped_micro_batches = sorted({*state.skipped_micro_batches, bad_window})
    restored.nan_injected = state.nan_injected
    restored.elapsed_s = state.elapsed_s
    metrics.write({"event": "recovery", "step": bad_step, "restored_step": restored.step,
                   "restored_from": str(path) if path else "start of run",
                   "skipped_micro_batches": [bad_window, bad_window + accumulation - 1],
                   "recoveries": restored.recoveries})
    console.print(f"non-finite loss at step {bad_step}: restored step {restored.step} "
                  f"from {path or 'the start of the run'} and skipping micro-batches "
                  f"{bad_window}–{bad_window + accumulation - 1} (recovery {restored.recoveries}/"
                  f"{setup.config.training.max_recoveries})")
    return restored


def _evaluate(setup: TrainingSetup, amp, stop: StopSignals | None = None) -> dict[str, dict] | None:
    """Every validation split; every rank evaluates all of it (FSDP needs every rank in each forward).

    With `stop`, a signal (on any rank, agreed before every batch) abandons the pass: None.
    """
    cfg = setup.config.training
    module = setup.assembly.module
    parallel = setup.assembly.parallel
    call = module if module is not None and parallel.strategy == "fsdp" else None
    interrupted = (lambda: parallel.any(stop.requested(), setup.device)) if stop is not None else None
    values = {}
    for split, sets in setup.val_sets.items():
        values[split] = evaluate(setup.model, sets, setup.objective, batch_size=cfg.batch_size, device=setup.device,
                                 max_batches=cfg.eval_max_batches, autocast=amp, call=call, interrupted=interrupted)
        if values[split] is None:
            return None
    return values


def _write_val(metrics: RecordFanOut, state: TrainState, batches_per_epoch: int, unit: str) -> None:
    """One metrics record per validation split (the unit count stays out: it is not a metric)."""
    for split, values in state.last_val.items():
        metrics.write({"step": state.step, "epoch": round(state.micro_batch / batches_per_epoch, 4),
                       "split": split, **{k: v for k, v in values.items() if k != unit}})


def _track_best(state: TrainState, split: str, objective: Objective) -> bool:
    """Record a new best when the objective's best metric improves; count evaluations without one."""
    values = state.last_val[split]
    value = values[objective.best_metric.name]
    # A coarse metric (WER stuck at 1.0 early on) ties often: the lower loss breaks the tie.
    tie_won = value == state.best_value and state.best_val_loss is not None and values["loss"] < state.best_val_loss
    if objective.best_metric.improves(value, state.best_value) or tie_won:
        state.best_value, state.best_val_loss, state.best_step = value, values["loss"], state.step
        state.evals_without_improvement = 0
        return True
    state.evals_without_improvement += 1
    return False


def _save(setup: TrainingSetup, manager: CheckpointManager, metrics: RecordFanOut, kind: str,
          state: TrainState) -> Path:
    """Write a periodic, best or final checkpoint with everything a resume needs, and log it.

    The write is atomic: a rank that dies mid-save (see `lost_peers`) leaves the previous
    checkpoint the one a re-run resumes from.
    """
    return _write_checkpoint(setup, manager, metrics, kind, state)


def _write_checkpoint(setup: TrainingSetup, manager: CheckpointManager, metrics: RecordFanOut, kind: str,
                      state: TrainState) -> Path:
    """The save itself: collectives on every rank, then rank 0 writes atomically."""
    val = state.last_val.get(setup.best_split, {})
    meta = {**setup.meta, "run_id": run_id_of(setup.config, setup.run_dir), "step": state.step,
            "epoch": round(state.micro_batch / setup.train_batches.batches_per_epoch, 4),
            "val_loss": val.get("loss"), "val_ppl": val.get("ppl"),
            "stage": setup.config.stage, "learning_rate": setup.config.training.learning_rate}
    parallel = setup.assembly.parallel
    # Collectives first, on every rank alike. An FSDP run's periodic checkpoint: each rank writes its
    # own shards (DCP) into a temporary folder that rank 0 moves into the checkpoint; otherwise the
    # FSDP shards are gathered whole (best/ and final/ hold a model.safetensors transformers loads).
    if kind == "periodic" and parallel.strategy == "fsdp" and setup.assembly.adapter is None:
        shards = setup.run_dir / PERIODIC_DIR / f"{TMP_PREFIX}sharded-{step_dir_name(state.step)}"
        if parallel.is_main:
            shutil.rmtree(shards, ignore_errors=True)
            shards.mkdir(parents=True)
        parallel.barrier()
        save_sharded(setup.model, setup.optimizer, shards)
        weights, optimizer_state = {"weights": None, "sharded_dir": shards}, None
    else:
        weights = setup.assembly.checkpoint_weights(kind)
        optimizer_state = full_state(setup.optimizer.state_dict())
    rngs = parallel.gather(capture_rng_state())
    if not parallel.is_main:
        parallel.barrier()  # rank 0 writes; every rank leaves the save together
        return setup.run_dir
    trainer_state = {"optimizer": optimizer_state,
                     "scheduler": {"step": state.step - setup.initial_state.step + setup.schedule_offset},
                     "scaler": {}, "rng": rngs[0], "train_state": dataclasses.asdict(state)}
    if parallel.distributed:
        trainer_state["rng_ranks"] = rngs
        meta["world_size"] = parallel.world_size
    payload = dict(**weights, hf_config=setup.hf_config, meta=meta,
                   trainer_state=trainer_state, tokenizer_dir=setup.tokenizer_dir,
                   generation_config=setup.generation_config)
    if setup.config.debug.kill_during_save_at_step == state.step:
        payload["on_partial_write"] = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if kind == "periodic":
        path = manager.save_periodic(state.step, **payload)
    else:
        path = manager.save_best(**payload) if kind == "best" else manager.save_final(**payload)
    metrics.write({"event": "checkpoint", "step": state.step, "kind": kind, "path": str(path)})
    parallel.barrier()
    return path


def _save_inference(setup: TrainingSetup, metrics: RecordFanOut, state: TrainState) -> Path:
    """inference_checkpoints/step-N: weights (LoRA merged), config.json, tokenizer, generation config; no optimizer."""
    weights = setup.assembly.checkpoint_weights("final")  # collectives: every rank calls it
    target = setup.run_dir / INFERENCE_DIR / step_dir_name(state.step)
    if setup.assembly.parallel.is_main:
        save_checkpoint(target, weights=weights["weights"], hf_config=setup.hf_config,
                        meta={**setup.meta, "step": state.step, "stage": setup.config.stage, "kind": "inference"},
                        tokenizer_dir=setup.tokenizer_dir, generation_config=setup.generation_config)
        metrics.write({"event": "checkpoint", "step": state.step, "kind": "inference", "path": str(target)})
    setup.assembly.parallel.barrier()
    return target


def _val_line(val: dict, metric: str = "loss") -> str:
    """Loss (and perplexity) per split, and the best metric when it is another one (f1, wer)."""
    return " | ".join(f"{split} loss {values['loss']:.4f}" + (f" ppl {values['ppl']:.2f}" if "ppl" in values else "")
                      + (f" {metric} {values[metric]:.4f}" if metric != "loss" and metric in values else "")
                      + (f" exact {values['exact_match']:.3f}" if metric != "exact_match" and "exact_match" in values
                         else "")
                      for split, values in val.items())


def _epoch_line(epoch: int, train_loss: float, val: dict, improved: bool, metric: str, perplexity: bool) -> str:
    line = f"epoch {epoch}: train loss {train_loss:.4f}"
    if perplexity:
        line += f" ppl {math.exp(min(train_loss, 50.0)):.2f}"
    return line + (" | " + _val_line(val, metric) if val else "") + ("  ★ new best" if improved else "")


def _summary(setup: TrainingSetup, state: TrainState, stop_reason: str) -> dict:
    best = setup.objective.best_metric
    has_ppl = setup.objective.perplexity and state.best_val_loss is not None
    return {"stop_reason": stop_reason, "final_step": state.step, "total_steps": setup.total_steps,
            "best_step": state.best_step, "best_split": setup.best_split, "best_metric": best.name,
            "best_metric_mode": best.mode, "best_value": state.best_value, "best_val_loss": state.best_val_loss,
            "best_val_ppl": math.exp(min(state.best_val_loss, 50.0)) if has_ppl else None,
            "val_at_start": state.first_val, "val_at_end": state.last_val, "recoveries": state.recoveries,
            "tokens_seen": state.tokens_seen, "wall_time_s": round(state.elapsed_s, 3)}

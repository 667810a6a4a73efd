"""Data-parallel training under `torchrun` / `srun`: DDP or FSDP2 from `torch.distributed`, nothing home-made.

`training.strategy`: `single` (one process), `ddp` (DistributedDataParallel: every rank holds
the whole model, gradients are all-reduced), `fsdp` (FSDP2 `fully_shard` per block and the
root: parameters, gradients and optimizer state sharded; `training.fsdp.reshard_after_forward`
true is ZeRO-3-like, false ZeRO-2-like), or `auto` (single without a launcher, ddp with one).
The process group comes from the launcher's environment (env://): gloo on CPU, nccl on GPU.

What makes N ranks × batch b equal one process with batch N·b:
- data: micro-batch i of a step on rank r is global micro-batch `start + i·N + r`, so the
  resume position stays one number and a process with batch N·b reads the same windows;
- loss: each rank's summed loss is divided by the supervised units of the whole global
  step (all-reduced) and multiplied by N, since DDP and FSDP average gradients over ranks;
- gradient accumulation syncs only on a step's last micro-batch.
The wrapped module is `ObjectiveModule` (model + objective): the loss is computed inside its
`forward`, so DDP's and FSDP's forward hooks see every call, whatever method of the model
the objective uses.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tempering.errors import UserError
from tempering.models.family import ParameterLayout
from tempering.tracking.console import console

STRATEGIES = ("auto", "single", "ddp", "fsdp")


class ObjectiveModule(nn.Module):
    """model + objective as one module whose forward returns the objective's LossResult."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict, predict: bool = False):
        """The objective's loss on `batch`; with `predict`, its (loss, predictions) for a split metric."""
        return self.objective.predict(self.model, batch) if predict else self.objective(self.model, batch)


@dataclass
class Parallel:
    """Which rank this process is, of how many, and the collectives the loop needs."""

    strategy: str = "single"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    reshard_after_forward: bool = True

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, metrics, checkpoints' shared files and the console."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.strategy != "single"

    def micro_batches(self, start: int, accumulation: int) -> list[int]:
        """The global micro-batch indices this rank reads for an optimizer step starting at `start`."""
        return [start + i * self.world_size + self.rank for i in range(accumulation)]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """All-reduce a tensor (a copy) by summing over ranks; itself with one process."""
        if not self.distributed:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def sum_int(self, value: int, device: torch.device) -> int:
        """An integer summed over ranks."""
        if not self.distributed:
            return value
        return int(self.sum(torch.tensor(value, dtype=torch.int64, device=device)).item())

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer)."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor(int(flag), device=device)).item())

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (a picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module, objective, layout: ParameterLayout, *, mixed_precision: str,
             device: torch.device, find_unused: bool = False) -> nn.Module:
        """The module the loop calls for a loss: DDP or FSDP2 around model + objective, or that pair alone.

        `find_unused` lets DDP cope with parameters that sometimes get no gradient (blocks still
        frozen by progressive unfreezing).
        """
        module = ObjectiveModule(model, objective)
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.cuda.current_device()] if device.type == "cuda" else None
            return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
        if self.strategy == "fsdp":
            _fully_shard(module, layout, reshard_after_forward=self.reshard_after_forward,
                         mixed_precision=mixed_precision if device.type == "cuda" else "fp32")
        return module

    def no_sync(self, module: nn.Module, last: bool):
        """Skip the gradient reduction on every micro-batch but a step's last one."""
        if last or not self.distributed:
            return contextlib.nullcontext()
        if self.strategy == "ddp":
            return module.no_sync()
        return _fsdp_sync_off(module)


@contextlib.contextmanager
def _fsdp_sync_off(module: nn.Module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _fully_shard(module: ObjectiveModule, layout: ParameterLayout, *, reshard_after_forward: bool,
                 mixed_precision: str) -> None:
    """FSDP2: one shard group per block (found through the family's layout), then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
    for name, block in module.model.named_modules():
        match = layout.block_pattern.match(name + ".")
        if match and match.end() == len(name) + 1:
            fully_shard(block, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(module, reshard_after_forward=reshard_after_forward, mp_policy=policy)


@contextlib.contextmanager
def lost_peers(parallel: Parallel, run_dir, timeout_minutes: float):
    """Turn "another rank died or stopped answering" into one clear error instead of a traceback.

    A collective fails when a peer process dies (connection closed) or does not answer within
    `timeout_minutes`. Checkpoints are written atomically, so the last complete one is intact.
    """
    try:
        yield
    except RuntimeError as exc:
        if not parallel.distributed or not _peer_failure(exc):
            raise
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first_line = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0][:160]  # gloo's source location
        raise UserError(f"another process of this run died or stopped answering (waited up to {timeout_minutes:g} "
                        f"min, training.distributed_timeout_minutes): {first_line}; nothing half-written was kept, "
                        f"re-run the same command to resume from the last complete checkpoint in {run_dir}") from exc


def _peer_failure(exc: BaseException) -> bool:
    """Whether a collective failed because a rank died or timed out, not because of a bug."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        sign in text for sign in ("timed out", "timeout", "connection closed", "connection reset", "broken pipe"))


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP's gradient norm, a sharded weight) gathered into a plain tensor; other tensors as they are."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def full_state(value: Any) -> Any:
    """A state dict (or optimizer state, nested) with every shard gathered whole: every rank must call it alike."""
    if isinstance(value, dict):
        return {key: full_state(item) for key, item in value.items()}
    if isinstance(value, list):
        return [full_state(item) for item in value]
    return full_value(value) if isinstance(value, torch.Tensor) else value


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `like` is: the same DTensor sharding when `like` is one, else `full` itself."""
    if not hasattr(like, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)


def sharded_weights(model: nn.Module, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole-model state dict cut into the shards of `model`'s (FSDP) parameters."""
    current = model.state_dict()
    return {name: shard_like(tensor, current[name]) if name in current else tensor for name, tensor in full.items()}


def sharded_optimizer_state(state_dict: dict, optimizer) -> dict:
    """A whole optimizer state (moments as full tensors) cut into the shards of the optimizer's parameters."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    state = {}
    for index, moments in state_dict["state"].items():
        param = params[index] if index < len(params) else None
        state[index] = {name: shard_like(value, param) if param is not None and name != "step" else value
                        for name, value in moments.items()}
    return {**state_dict, "state": state}


def start_parallel(strategy: str, reshard_after_forward: bool = True, timeout_minutes: float = 30) -> Parallel:
    """Join the launcher's process group (torchrun / srun set WORLD_SIZE, RANK, LOCAL_RANK) or stay single.

    `timeout_minutes` bounds every collective, so a rank that died never hangs the others forever.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    launched = world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun, even with one process
    if strategy == "auto":
        strategy = "ddp" if world_size > 1 else "single"
    if strategy == "single":
        if world_size > 1:
            raise UserError(f"training.strategy is single but the launcher started {world_size} processes; use "
                            "training.strategy=ddp or fsdp (auto picks ddp under torchrun)")
        return Parallel()
    if not launched:
        raise UserError(f"training.strategy {strategy} needs several processes: launch with `torchrun "
                        "--nproc-per-node N -m tempering ...` (or `temper submit` on SLURM), or use single")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    parallel = Parallel(strategy, dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                        reshard_after_forward)
    if not parallel.is_main:
        console.quiet = True  # rank 0 alone writes the console
    return parallel


def rank_device(parallel: Parallel, requested: str) -> str:
    """Each rank's own GPU under a launcher (cuda:LOCAL_RANK); the request unchanged otherwise."""
    if parallel.distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(parallel.local_rank)
        return f"cuda:{parallel.local_rank}"
    return requested

"""Which process this is among the launcher's (torchrun / srun): rank 0 alone writes shared files."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from tempering.errors import UserError

T = TypeVar("T")


def current_rank() -> int:
    """This process's rank: torch.distributed's when initialised, else $RANK, else 0."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes run directories, checkpoints, caches and the console (rank 0)."""
    return current_rank() == 0


def on_main_process(task: Callable[[], T]) -> T:
    """Run `task` on rank 0 only and give every rank its result, or the UserError it raised.

    Under a launcher, other ranks wait for rank 0 (a broadcast), so they never see a half-made
    run directory and all refuse a bad start together instead of hanging. Alone, it runs `task`.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return task()
    outcome: list = [None]
    if dist.get_rank() == 0:
        try:
            outcome = [("ok", task())]
        except UserError as error:
            dist.broadcast_object_list([("error", str(error))], src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise UserError(value)
    return value


def world_size() -> int:
    """How many processes train together: torch.distributed's when initialised, else $WORLD_SIZE, else 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))

"""Sharded periodic checkpoints of FSDP runs through `torch.distributed.checkpoint` (DCP).

Under `training.strategy=fsdp` each rank holds a shard of every parameter and of its optimizer
moments. A periodic (resumable) checkpoint then writes `sharded/`: every rank its own part, in
parallel, nothing gathered on one rank. `best/` and `final/` still hold a consolidated
`model.safetensors` that transformers loads. DCP reshards on load, so a sharded checkpoint resumes
at any world size, also as one process without a process group (DCP reads in a single process
there). Keys are parameter names — `model.<name>` for weights, `optimizer.<name>.<moment>` for
AdamW's moments — the same under every strategy.

Why the optimizer side is written here and not with `torch.distributed.checkpoint.state_dict`'s
`get_state_dict`: that helper takes only `torch.optim.Optimizer` instances, and Tempering's AdamW
(training/adamw.py) deliberately is not one. Its state is three tensors per parameter, so naming
them by parameter is a few lines.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from torch import nn

MOMENTS = ("step", "exp_avg", "exp_avg_sq")  # training/adamw.py's state per parameter


def save_sharded(model: nn.Module, optimizer, folder: Path) -> None:
    """Write model and optimizer state to `folder`, each rank its shards (a collective: every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    with _quiet():
        dcp.save({"model": model.state_dict(), "optimizer": _moments_by_name(model, optimizer)},
                 checkpoint_id=str(folder))


def load_sharded(model: nn.Module, optimizer, folder: Path) -> None:
    """Fill model and optimizer from a sharded checkpoint, resharded to this run's layout (any world size)."""
    import torch.distributed.checkpoint as dcp

    saved = set(_metadata(folder).state_dict_metadata)
    weights = model.state_dict()
    moments = _moments_by_name(model, optimizer, allocate=True)
    params = dict(model.named_parameters())
    for name in [name for name in moments if f"optimizer.{name}.exp_avg" not in saved]:
        del moments[name], optimizer.state[params[name]]  # no moments saved for it: it starts fresh, as it did
    with _quiet():  # DCP reads into these tensors in place: the parameters' (shards') and the moments' own storage
        dcp.load({"model": weights, "optimizer": moments}, checkpoint_id=str(folder))
    model.load_state_dict(weights)


def read_sharded_weights(folder: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The whole model's weights (parameter name -> tensor) from a sharded checkpoint, in one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = "model."
    weights = {key[len(prefix):]: torch.empty(tuple(item.size), dtype=item.properties.dtype, device=device)
               for key, item in _metadata(folder).state_dict_metadata.items()
               if key.startswith(prefix) and isinstance(item, TensorStorageMetadata)}
    with _quiet():
        dcp.load({"model": weights}, checkpoint_id=str(folder), no_dist=True)
    return weights


def _moments_by_name(model: nn.Module, optimizer, allocate: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The optimizer's state keyed by parameter name; with `allocate`, zeros where it has none yet (to load into)."""
    names = {id(param): name for name, param in model.named_parameters()}
    state = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if allocate and not optimizer.state.get(param):
                optimizer.state[param] = {"step": torch.zeros((), dtype=torch.float32, device=param.device),
                                          "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
            if optimizer.state.get(param):
                state[names[id(param)]] = {key: optimizer.state[param][key] for key in MOMENTS}
    return state


def _metadata(folder: Path):
    from torch.distributed.checkpoint import FileSystemReader

    return FileSystemReader(str(folder)).read_metadata()


@contextlib.contextmanager
def _quiet():
    """DCP warns that it assumes a single process when there is no process group: that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process.*")
        yield

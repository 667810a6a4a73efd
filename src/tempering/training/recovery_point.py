"""The recovery point of a run before its first checkpoint exists: its starting weights and optimizer state.

A NaN before the first checkpoint rolls back to the start of the run. Holding that start in
memory would cost the model's size (and the optimizer state's, when a post-train run loaded one)
for every step until the first checkpoint, which in a short run is the whole run. Instead the
tensors are written to a file in the run directory, memory-mapped, and the file is unlinked at
once: no path is left behind (the kernel frees the blocks when the process ends, after kill -9
too), and the pages are read back only if a recovery needs them. The file's disk space stays in
use until the loop drops the recovery point, just before it writes the first checkpoint. If the
disk refuses the file, the copy stays in memory and a warning says so.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from tempering.checkpoint.io import find_os_error
from tempering.checkpoint.rng import capture_rng_state, restore_rng_state
from tempering.tracking.console import warn


def capture_start(model, optimizer, state, folder: Path) -> dict:
    """The run's starting weights, optimizer state, RNG state and train state, tensors spilled to an unlinked file."""
    tensors = {"weights": {k: v.detach() for k, v in model.export_state_dict().items()},
               "optimizer": optimizer.state_dict()}
    try:
        tensors = _spill(tensors, folder)
    except OSError as error:
        warn(f"could not write the start-of-run recovery point to {folder} ({error}); it stays in memory")
        tensors = copy.deepcopy(tensors)
    return {**tensors, "rng": capture_rng_state(), "state": dataclasses.replace(state)}


def restore_start(model, optimizer, start: dict):
    """Load a `capture_start` result back into the model, optimizer and RNGs; return a copy of its train state."""
    model.load_exported_state_dict(start["weights"])
    optimizer.load_state_dict(copy.deepcopy(start["optimizer"]))  # private copies: the optimizer updates them in place
    restore_rng_state(start["rng"])
    return dataclasses.replace(start["state"])


def _spill(tensors: dict, folder: Path) -> dict:
    handle, path = tempfile.mkstemp(prefix=".recovery-point-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:  # through Python's file, so a failed write keeps its OSError
            torch.save(tensors, file)
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError as error:  # torch wraps the failed write (a full disk, say) in its own error
        raise find_os_error(error) or OSError(str(error)) from error
    finally:
        os.unlink(path)

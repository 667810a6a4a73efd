"""Capture and restore the global random generators a training step draws from.

Covers Python's `random`, numpy's global RandomState, torch's CPU generator and, when CUDA
is available, every CUDA device's generator. The state is stored in trainer_state.pt,
which is read with `torch.load(weights_only=True)`; that loader accepts only containers,
numbers, strings and tensors, so Python's tuple state and numpy's uint32 array become
int64 tensors here. Generators the caller owns (a `torch.Generator` or a numpy
`Generator` in the data pipeline) are saved by their owner, not here.
"""

import random

import numpy as np
import torch


def capture_rng_state() -> dict:
    """Return the state of every global RNG as plain containers and tensors."""
    version, words, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    if kind != "MT19937":
        raise RuntimeError(f"numpy's global RNG is {kind}; only MT19937 can be saved")
    state = {
        "python": {
            "version": version,
            "words": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Set every global RNG from a capture_rng_state() result.

    CUDA states are restored for the devices present (resuming on fewer GPUs keeps the
    first ones); a state captured without CUDA leaves CUDA generators as they are.
    """
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda_states = state["torch_cuda"][: torch.cuda.device_count()]
        for device, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, device)

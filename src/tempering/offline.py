"""`offline: true`: the switches that keep Hugging Face and W&B libraries off the network (compute nodes)."""

from __future__ import annotations

import os

OFFLINE_SWITCHES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "WANDB_MODE": "offline"}


def apply_offline_switches(offline: bool) -> None:
    """Set the libraries' offline environment variables when `offline` (before they are imported)."""
    if offline:
        os.environ.update(OFFLINE_SWITCHES)

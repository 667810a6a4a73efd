"""Tiny checkpoint payloads shared by the checkpoint tests."""

import pytest
import torch


def make_payload(step: int, *, value: float | None = None, resumable: bool = True) -> dict:
    """Build save_checkpoint keyword arguments whose weights encode `value` (default: step)."""
    fill = float(step if value is None else value)
    return {
        "weights": {
            "model.embed_tokens.weight": torch.full((8, 4), fill),
            "model.norm.weight": torch.full((4,), fill, dtype=torch.bfloat16),
        },
        "hf_config": {"model_type": "llama", "vocab_size": 8, "hidden_size": 4},
        "meta": {"step": step, "epoch": 0, "model_type": "llama"},
        "trainer_state": {"step": step, "data_position": torch.tensor([step, 0])}
        if resumable
        else None,
    }


@pytest.fixture
def payload():
    """Give tests the make_payload builder."""
    return make_payload

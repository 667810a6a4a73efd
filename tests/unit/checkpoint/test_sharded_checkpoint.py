"""Sharded (DCP) periodic checkpoints, in one process: round trip, moments, whole-weight reads, atomic move-in."""

from __future__ import annotations

import pytest
import torch

from tempering.checkpoint.io import load_checkpoint, save_checkpoint
from tempering.checkpoint.model_loading import build_from_checkpoint
from tempering.checkpoint.sharded import load_sharded, read_sharded_weights, save_sharded
from tempering.errors import UserError
from tempering.models.llama import LLAMA
from tempering.training.adamw import AdamW

ARCH = LLAMA.architecture("tiny", {})


def _trained(seed: int, frozen: tuple[str, ...] = ()) -> tuple[torch.nn.Module, AdamW]:
    """A tiny model after one AdamW step (parameters named in `frozen` get no gradient, so no moments)."""
    torch.manual_seed(seed)
    model = LLAMA.build(ARCH)
    optimizer = AdamW([{"params": list(model.parameters())}], lr=1e-2)
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    model(torch.randint(0, ARCH.vocab_size, (2, 16))).sum().backward()
    optimizer.step()
    for param in model.parameters():
        param.grad = None
    return model, optimizer


def _step(model, optimizer, batch) -> None:
    model(batch).sum().backward()
    optimizer.step()
    for param in model.parameters():
        param.grad = None


def test_a_sharded_save_loads_into_a_fresh_model_and_trains_on_identically(tmp_path):
    model, optimizer = _trained(0)
    save_sharded(model, optimizer, tmp_path / "shards")
    fresh_model, fresh_optimizer = LLAMA.build(ARCH), None
    fresh_optimizer = AdamW([{"params": list(fresh_model.parameters())}], lr=1e-2)
    load_sharded(fresh_model, fresh_optimizer, tmp_path / "shards")
    batch = torch.randint(0, ARCH.vocab_size, (2, 16))
    _step(model, optimizer, batch)
    _step(fresh_model, fresh_optimizer, batch)
    for (name, expected), actual in zip(model.state_dict().items(), fresh_model.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), name


def test_parameters_without_moments_stay_without_them(tmp_path):
    model, optimizer = _trained(0, frozen=("model.norm.weight",))
    save_sharded(model, optimizer, tmp_path / "shards")
    fresh_model = LLAMA.build(ARCH)
    fresh_optimizer = AdamW([{"params": list(fresh_model.parameters())}], lr=1e-2)
    load_sharded(fresh_model, fresh_optimizer, tmp_path / "shards")
    assert fresh_model.model.norm.weight not in fresh_optimizer.state
    assert torch.equal(fresh_optimizer.state[fresh_model.model.embed_tokens.weight]["exp_avg"],
                       optimizer.state[model.model.embed_tokens.weight]["exp_avg"])


def test_a_sharded_checkpoint_is_moved_in_atomically_and_reads_as_whole_weights(tmp_path):
    model, optimizer = _trained(1)
    shards = tmp_path / "run" / "checkpoints" / ".tmp-sharded-step-00000001"
    save_sharded(model, optimizer, shards)
    target = tmp_path / "run" / "checkpoints" / "step-00000001"
    save_checkpoint(target, weights=None, sharded_dir=shards, hf_config=LLAMA.to_hf_config(
        ARCH, dropout=0.0, special=_special()), meta={"step": 1, "family": "llama"}, trainer_state={"step": 1})
    assert not shards.exists() and (target / "sharded" / ".metadata").is_file()
    assert not (target / "model.safetensors").exists()
    checkpoint = load_checkpoint(target)
    assert checkpoint.is_sharded and checkpoint.has_weights
    weights = read_sharded_weights(target / "sharded")
    assert set(weights) == set(model.state_dict())
    _, _, rebuilt = build_from_checkpoint(checkpoint)  # what eval and generate load
    for (name, expected), actual in zip(model.state_dict().items(), rebuilt.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), name


def test_a_sharded_folder_without_its_metadata_is_refused(tmp_path):
    model, optimizer = _trained(1)
    shards = tmp_path / "shards"
    save_sharded(model, optimizer, shards)
    target = tmp_path / "step-00000001"
    save_checkpoint(target, weights=None, sharded_dir=shards, hf_config={"model_type": "llama"},
                    meta={"step": 1}, trainer_state={"step": 1})
    (target / "sharded" / ".metadata").unlink()
    with pytest.raises(UserError, match="sharded is incomplete: its .metadata is missing"):
        load_checkpoint(target)


def _special():
    from tempering.models.family import SpecialTokenIds

    return SpecialTokenIds(bos_id=1, eos_ids=(2,), pad_id=0)

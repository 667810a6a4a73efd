"""Saving and loading one checkpoint directory: files, round trips, corruption, write failures."""

import errno
import io
import json
import pickle
import random
import resource
import signal
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from safetensors import SafetensorError, safe_open

from tempering.checkpoint import io as checkpoint_io
from tempering.checkpoint.io import (
    check_weights_only_loadable,
    load_checkpoint,
    save_checkpoint,
)
from tempering.checkpoint.rng import capture_rng_state, restore_rng_state
from tempering.errors import UserError


def _tokenizer_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    (folder / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    (folder / "unrelated.txt").write_text("not copied")
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip_is_bit_identical(tmp_path):
    weights = {
        "model.embed_tokens.weight": torch.randn(8, 4),
        "lm_head.weight": torch.randn(4, 8).t(),  # a non-contiguous view
        "model.norm.weight": torch.randn(4).to(torch.bfloat16),
    }
    meta = {"step": 7, "val_loss": 1.25, "source_checkpoint": Path("runs/base/best")}
    target = save_checkpoint(
        tmp_path / "run" / "final",
        weights=weights,
        hf_config={"model_type": "llama", "vocab_size": 8},
        meta=meta,
        trainer_state={"step": 7},
        tokenizer_dir=_tokenizer_dir(tmp_path),
    )

    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "meta.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "trainer_state.pt",
    ]
    checkpoint = load_checkpoint(target)
    loaded = checkpoint.load_weights()
    assert loaded.keys() == weights.keys()
    for name, tensor in weights.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)
    assert checkpoint.hf_config == {"model_type": "llama", "vocab_size": 8}
    assert checkpoint.step == 7
    assert checkpoint.meta["val_loss"] == 1.25
    assert checkpoint.meta["source_checkpoint"] == "runs/base/best"
    assert checkpoint.meta["post_training"] is None  # documented keys are always present
    assert checkpoint.meta["created_at"].endswith("+00:00")
    assert checkpoint.tokenizer_dir == target
    assert (target / "tokenizer.json").read_text() == '{"model": {"type": "BPE"}}'
    with safe_open(target / "model.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}  # transformers refuses files without it
    assert _leftovers(target.parent) == []


def test_created_at_given_by_caller_is_kept(tmp_path, payload):
    args = payload(1)
    args["meta"]["created_at"] = "2024-01-02T03:04:05+00:00"
    save_checkpoint(tmp_path / "final", **args)
    meta = json.loads((tmp_path / "final" / "meta.json").read_text())
    assert meta["created_at"] == "2024-01-02T03:04:05+00:00"


def test_trainer_state_loads_with_weights_only_and_resumes_identically(tmp_path, payload):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.standard_normal()  # and in numpy's
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        "best_val_loss": 2.5,
    }
    expected_draws = (
        random.random(),
        random.gauss(0, 1),
        np.random.standard_normal(3),
        torch.rand(3),
    )
    args = payload(1)
    args["weights"] = {name: p.detach().clone() for name, p in model.named_parameters()}
    save_checkpoint(tmp_path / "best", **{**args, "trainer_state": state})

    loaded = load_checkpoint(tmp_path / "best").load_trainer_state()
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(load_checkpoint(tmp_path / "best").load_weights())
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.1)
    twin_optimizer.load_state_dict(loaded["optimizer"])
    for opt, net in ((optimizer, model), (twin_optimizer, twin)):
        opt.zero_grad()
        net(torch.ones(4, 3)).sum().backward()
        opt.step()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )
    assert loaded["scheduler"]["last_epoch"] == 1
    assert loaded["best_val_loss"] == 2.5

    random.random(), np.random.rand(), torch.rand(5)  # move every RNG on
    restore_rng_state(loaded["rng"])
    draws = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(3))
    assert draws[:2] == expected_draws[:2]
    assert np.array_equal(draws[2], expected_draws[2])
    assert torch.equal(draws[3], expected_draws[3])


def test_trainer_state_that_weights_only_would_reject_fails_before_writing(tmp_path, payload):
    args = payload(1)
    args["trainer_state"] = {"metrics": {"best": np.float64(1.5)}}
    with pytest.raises(TypeError, match=r"trainer_state\['metrics'\]\['best'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "final", **args)
    assert list(tmp_path.iterdir()) == []


def test_check_weights_only_loadable_agrees_with_torch_load():
    plain = {"a": [1, 2.0, "x", b"y", None, True], "b": (torch.Size([2]), torch.float16), "c": {3}}
    check_weights_only_loadable(plain)
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == plain

    rejected = {"counts": defaultdict(int), "loss": np.float64(1.5), "path": PurePosixPath("a")}
    with pytest.raises(TypeError, match=r"trainer_state\['counts'\] is a collections.defaultdict"):
        check_weights_only_loadable(rejected)
    for key in ("loss", "path"):
        with pytest.raises(TypeError, match=rf"trainer_state\['{key}'\] is a "):
            check_weights_only_loadable({key: rejected[key]})
    buffer = io.BytesIO()
    torch.save(rejected, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "meta.json"])
def test_missing_file_is_named(tmp_path, payload, name):
    target = save_checkpoint(tmp_path / "final", **payload(1))
    (target / name).unlink()
    with pytest.raises(UserError, match=rf"checkpoint .*final is incomplete: {name} is missing"):
        load_checkpoint(target)


def test_truncated_weights_are_named(tmp_path, payload):
    target = save_checkpoint(tmp_path / "final", **payload(1))
    file = target / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-40])
    with pytest.raises(UserError, match=r"final/model.safetensors is corrupt or truncated"):
        load_checkpoint(target)


@pytest.mark.parametrize("name", ["config.json", "meta.json"])
def test_unparsable_json_is_named(tmp_path, payload, name):
    target = save_checkpoint(tmp_path / "final", **payload(1))
    text = (target / name).read_text()
    (target / name).write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match=rf"final/{name} is corrupt or truncated"):
        load_checkpoint(target)


def test_meta_without_step_is_named(tmp_path, payload):
    target = save_checkpoint(tmp_path / "final", **payload(1))
    (target / "meta.json").write_text('{"epoch": 1}')
    with pytest.raises(UserError, match=r"final/meta.json is corrupt: it has no integer 'step'"):
        load_checkpoint(target)


def test_trainer_state_missing_or_truncated_is_named(tmp_path, payload):
    without = load_checkpoint(save_checkpoint(tmp_path / "a", **payload(1, resumable=False)))
    assert not without.has_trainer_state
    with pytest.raises(UserError, match=r"has no trainer_state.pt, so training cannot resume"):
        without.load_trainer_state()
    target = save_checkpoint(tmp_path / "b", **payload(1))
    file = target / "trainer_state.pt"
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(UserError, match=r"b/trainer_state.pt is corrupt or truncated"):
        load_checkpoint(target).load_trainer_state()


def test_missing_checkpoint_dir(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint .*nowhere does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_tokenizer_dir_without_tokenizer_json(tmp_path, payload):
    (tmp_path / "tok").mkdir()
    with pytest.raises(UserError, match=r"tokenizer directory .*tok has no tokenizer.json"):
        save_checkpoint(tmp_path / "final", tokenizer_dir=tmp_path / "tok", **payload(1))


def test_target_that_is_a_file(tmp_path, payload):
    (tmp_path / "final").write_text("user data")
    with pytest.raises(UserError, match=r"final is a file; a checkpoint must be a directory"):
        save_checkpoint(tmp_path / "final", **payload(1))
    assert (tmp_path / "final").read_text() == "user data"


def _assert_previous_intact(folder: Path, step: int) -> None:
    checkpoint = load_checkpoint(folder / "final")
    assert checkpoint.step == step
    assert torch.equal(
        checkpoint.load_weights()["model.embed_tokens.weight"], torch.full((8, 4), 1.0)
    )
    assert _leftovers(folder) == []


def test_disk_full_in_torch_save_keeps_previous(tmp_path, payload, monkeypatch):
    target = save_checkpoint(tmp_path / "final", **payload(1))

    def full_disk_save(obj, handle):
        handle.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(UserError) as caught:
        save_checkpoint(target, **payload(2))
    assert str(caught.value) == (
        f"could not write checkpoint {target}: No space left on device; the previous checkpoint "
        f"{target} is intact; free disk space and re-run the same command to resume"
    )
    _assert_previous_intact(tmp_path, step=1)


def test_disk_full_reported_by_safetensors_keeps_previous(tmp_path, payload, monkeypatch):
    target = save_checkpoint(tmp_path / "final", **payload(1))

    def full_disk_save_file(tensors, file, metadata=None):
        Path(file).write_bytes(b"\x10\x00")
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(checkpoint_io, "save_file", full_disk_save_file)
    with pytest.raises(UserError, match=r"No space left on device; the previous checkpoint"):
        save_checkpoint(target, **payload(2))
    _assert_previous_intact(tmp_path, step=1)


@pytest.fixture
def file_size_limit():
    """Make writes past 64 KiB fail with EFBIG, a real OS write error, then undo it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("too_big", ["weights", "trainer_state"])
def test_real_write_failure_keeps_previous(tmp_path, payload, too_big, request):
    target = save_checkpoint(tmp_path / "final", **payload(1))
    args = payload(2)
    args[too_big] = {"big": torch.zeros(40_000)}  # 160 kB, past the limit
    request.getfixturevalue("file_size_limit")
    with pytest.raises(
        UserError, match=r"could not write checkpoint .*: File too large; the previous"
    ):
        save_checkpoint(target, **args)
    _assert_previous_intact(tmp_path, step=1)


def test_failed_rename_puts_the_old_checkpoint_back(tmp_path, payload, monkeypatch):
    target = save_checkpoint(tmp_path / "final", **payload(1))
    real_rename = Path.rename

    def rename_failing_on_tmp(self, destination):
        if self.name.startswith(".tmp-"):
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", rename_failing_on_tmp)
    with pytest.raises(UserError, match=r"Input/output error; the previous checkpoint"):
        save_checkpoint(target, **payload(2))
    monkeypatch.undo()
    _assert_previous_intact(tmp_path, step=1)

"""training.compile: when auto compiles, and the fall-back to eager on a compile error."""

from __future__ import annotations

import shutil

import pytest
import torch

from tempering.training import compiling
from tempering.training.compiling import (
    AUTO_MIN_STEPS,
    compiled_step,
    is_compile_error,
    should_compile,
)

CPU = torch.device("cpu")


def test_explicit_settings_win_and_auto_compiles_only_long_fixed_shape_runs(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    assert should_compile(True, total_steps=1, static_shapes=False, device=CPU)
    assert not should_compile(False, total_steps=10**6, static_shapes=True, device=CPU)
    assert should_compile("auto", total_steps=AUTO_MIN_STEPS, static_shapes=True, device=CPU)
    assert not should_compile("auto", total_steps=AUTO_MIN_STEPS - 1, static_shapes=True, device=CPU)
    assert not should_compile("auto", total_steps=10**6, static_shapes=False, device=CPU)
    assert not should_compile("auto", total_steps=10**6, static_shapes=True, device=torch.device("mps"))
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C++ compiler: Inductor cannot build CPU kernels
    assert not should_compile("auto", total_steps=10**6, static_shapes=True, device=CPU)


class FakeInductorError(RuntimeError):
    """Stands in for torch._inductor.exc errors (their constructors need compiler internals)."""


FakeInductorError.__module__ = "torch._inductor.exc"


def test_a_compile_error_falls_back_to_eager_for_good(monkeypatch, tmp_path, capsys):
    calls = []

    def broken_compile(fn):
        def compiled(*args):
            calls.append("compiled")
            raise FakeInductorError("C++ compile error\nlong details")
        return compiled

    def objective(x):
        calls.append("eager")
        return x * 2

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored after the test")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    step = compiled_step(objective, tmp_path)
    assert step(3) == 6 and step(4) == 8
    assert calls == ["compiled", "eager", "eager"]
    assert "torch.compile failed (FakeInductorError: C++ compile error)" in capsys.readouterr().err
    assert compiling.os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


def test_errors_from_the_model_are_not_swallowed(monkeypatch, tmp_path):
    def compiled_raises(fn):
        def compiled(*args):
            raise ValueError("shape mismatch in the data")
        return compiled

    monkeypatch.setattr(torch, "compile", compiled_raises)
    step = compiled_step(lambda x: x, tmp_path)
    with pytest.raises(ValueError, match="shape mismatch"):
        step(1)
    assert is_compile_error(FakeInductorError()) and not is_compile_error(ValueError())

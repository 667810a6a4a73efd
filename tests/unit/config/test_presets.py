"""Model presets: dimensions check out and parameter counts are computed correctly."""

from __future__ import annotations

import pytest

from tempering.errors import UserError
from tempering.models.llama.architecture import PRESETS, count_parameters
from tempering.models.registry import find_preset


def test_tiny_parameter_count_matches_a_hand_count():
    # tiny: vocab 1024, d 64, 2 layers, 4 heads of 16, 2 kv heads, d_ff 128, tied embeddings.
    embed = 1024 * 64
    attention = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64  # q, k (2 heads x 16), v, o
    mlp = 3 * 64 * 128
    norms = 2 * 64
    expected = embed + 2 * (attention + mlp + norms) + 64  # + final norm, no separate head
    assert expected == 139_584
    assert count_parameters(PRESETS["tiny"]) == expected


def test_untied_head_adds_a_vocab_by_width_matrix():
    tiny = PRESETS["tiny"]
    assert count_parameters(tiny.with_overrides(tie_embeddings=False)) - count_parameters(tiny) == 1024 * 64


def test_required_presets_and_sizes():
    assert count_parameters(PRESETS["tiny"]) < 1_000_000
    assert 8e6 < count_parameters(PRESETS["nano"]) < 12e6
    assert 65e6 < count_parameters(PRESETS["small"]) < 85e6
    assert 160e6 < count_parameters(PRESETS["large"]) < 190e6
    medium = PRESETS["medium"]
    assert (medium.d_model, medium.n_layers, medium.n_heads, medium.n_kv_heads, medium.d_ff) == (768, 12, 12, 3, 3072)
    for arch in PRESETS.values():
        arch.check()


def test_unknown_preset_suggests_a_name():
    with pytest.raises(UserError, match="unknown preset 'nanoo' — did you mean nano"):
        find_preset("nanoo")


def test_inconsistent_dimensions_are_rejected():
    with pytest.raises(UserError, match="model.d_model \\(64\\) must be divisible by model.n_heads \\(5\\)"):
        PRESETS["tiny"].with_overrides(n_heads=5).check()
    with pytest.raises(UserError, match="must be a multiple of model.n_kv_heads"):
        PRESETS["tiny"].with_overrides(n_kv_heads=3).check()

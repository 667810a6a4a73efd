"""Tiny architectures shared by the model tests."""

import pytest

from tempering.models.llama.architecture import Architecture


@pytest.fixture
def make_arch():
    """Return a factory for tiny decoder architectures (d 64, 2 layers, vocab 256)."""

    def make(**overrides) -> Architecture:
        dims = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                    max_seq_len=64, rope_theta=10000.0, tie_embeddings=False, norm_eps=1e-5)
        return Architecture(**{**dims, **overrides})

    return make

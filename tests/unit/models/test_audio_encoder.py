"""The audio_encoder family: declared tensors, 4x subsampling, padding does not leak, config round trip."""

from __future__ import annotations

import torch

from tempering.models.audio_encoder import AUDIO_ENCODER
from tempering.models.audio_encoder.architecture import subsampled_length
from tempering.models.family import SpecialTokenIds


def _model():
    arch = AUDIO_ENCODER.architecture("audio_enc_tiny", {})
    torch.manual_seed(0)
    return arch, AUDIO_ENCODER.build(arch).eval()


def test_declared_tensors_and_counts_match_the_built_model():
    arch, model = _model()
    state = model.export_state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == AUDIO_ENCODER.expected_tensors(arch)
    assert AUDIO_ENCODER.count_parameters(arch) == sum(p.numel() for p in model.parameters())


def test_output_has_a_quarter_of_the_frames_and_padding_changes_nothing():
    arch, model = _model()
    features = torch.randn(1, 101, 80)
    logits, lengths = model(features, torch.tensor([101]))
    assert logits.shape == (1, subsampled_length(101), arch.vocab_size) and lengths.tolist() == [24]
    padded = torch.cat([features, torch.randn(1, 40, 80)], 1)
    with torch.no_grad():
        both, both_lengths = model(torch.cat([padded, padded]), torch.tensor([101, 141]))
    assert both_lengths.tolist() == [24, subsampled_length(141)]
    torch.testing.assert_close(both[0, :24], logits[0].detach(), atol=1e-5, rtol=1e-5)


def test_config_json_round_trips_the_architecture():
    arch, _ = _model()
    config = AUDIO_ENCODER.to_hf_config(arch, dropout=0.0, special=SpecialTokenIds(0, (1,), 2))
    assert config["model_type"] == "tempering_audio_encoder"
    assert AUDIO_ENCODER.from_hf_config(config) == arch

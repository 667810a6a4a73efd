"""The speech families refuse dimensions that cannot form their encoder, naming the model.* key."""

from __future__ import annotations

import pytest

from tempering.errors import UserError
from tempering.models.audio_encoder import AUDIO_ENCODER
from tempering.models.talker import TALKER


@pytest.mark.parametrize("family, preset", [(AUDIO_ENCODER, "audio_enc_tiny"), (TALKER, "talker_tiny")])
@pytest.mark.parametrize("overrides, message", [
    ({"conv_kernel": 4}, "model.conv_kernel must be 0 or odd, got 4"),
    ({"d_model": 30}, r"model.d_model \(30\) must be model.n_heads \(2\) times an even head width"),
    ({"d_ff": 0}, "model.d_ff must be positive, got 0"),
])
def test_impossible_dimensions_name_their_key(family, preset, overrides, message):
    with pytest.raises(UserError, match=message):
        family.architecture(preset, overrides)


def test_the_audio_encoder_also_checks_its_convolution_channels():
    with pytest.raises(UserError, match="model.conv_channels must be positive, got 0"):
        AUDIO_ENCODER.architecture("audio_enc_tiny", {"conv_channels": 0})
    assert AUDIO_ENCODER.architecture("audio_enc_tiny", {"conv_kernel": 0}).conv_kernel == 0

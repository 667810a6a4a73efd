"""Every dimension of the `audio_encoder` family (speech recognition with CTC), its presets and tensors.

Data only: nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tempering.errors import UserError
from tempering.models.sequence_encoder_shapes import (
    check_encoder_dimensions,
    encoder_block_tensors,
    numel,
)

MODEL_TYPE = "tempering_audio_encoder"
SUBSAMPLING_KERNEL = 3  # two stride-2 convolutions of this kernel: 4x fewer frames
SUBSAMPLING_FACTOR = 4


@dataclass(frozen=True)
class AudioEncoderArchitecture:
    """Log-mel frames → 4x convolutional subsampling → transformer/conformer blocks → CTC logits."""

    vocab_size: int  # CTC classes: the tokenizer's ids (characters or pieces); the blank is one of them
    blank_id: int  # the CTC blank: the tokenizer's pad token
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    n_mels: int = 80
    conv_channels: int = 64  # channels of the subsampling convolutions
    conv_kernel: int = 15  # Conformer convolution module kernel in each block (0: plain transformer)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def subsampled_bins(self) -> int:
        """Mel bins left after the two subsampling convolutions."""
        return _conv_out(_conv_out(self.n_mels))

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model, naming the model.* key."""
        check_encoder_dimensions(self, ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "n_mels", "conv_channels"))
        if not 0 <= self.blank_id < self.vocab_size:
            raise UserError(f"model.blank_id ({self.blank_id}) must be a class below model.vocab_size "
                            f"({self.vocab_size})")
        if self.subsampled_bins < 1:
            raise UserError(f"model.n_mels ({self.n_mels}) is too few for the subsampling convolutions (at least 7)")

    def with_overrides(self, **overrides) -> AudioEncoderArchitecture:
        """Return a copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain dict of the dimensions."""
        return asdict(self)


def _conv_out(length: int) -> int:
    return (length - SUBSAMPLING_KERNEL) // 2 + 1


def subsampled_length(num_frames: int) -> int:
    """Encoder frames the model makes of `num_frames` mel frames (0 when too short)."""
    return max(_conv_out(_conv_out(num_frames)), 0)


# vocab_size and blank_id follow the run's tokenizer (29 characters + specials by default).
PRESETS: dict[str, AudioEncoderArchitecture] = {
    # For tests: a few seconds per run on a CPU core.
    "audio_enc_tiny": AudioEncoderArchitecture(vocab_size=32, blank_id=2, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                               conv_channels=8, conv_kernel=7),
    # Demo and benchmark scale: ~6M parameters, trains on a 2-core CPU.
    "audio_enc_small": AudioEncoderArchitecture(vocab_size=32, blank_id=2, d_model=192, n_layers=8, n_heads=4,
                                                d_ff=768, conv_channels=64, conv_kernel=15),
}


def expected_tensors(arch: AudioEncoderArchitecture) -> dict[str, tuple[int, ...]]:
    """The tensors AudioEncoder.export_state_dict writes for `arch`, by name and shape."""
    c, d, k = arch.conv_channels, arch.d_model, SUBSAMPLING_KERNEL
    shapes = {"subsampling.conv1.weight": (c, 1, k, k), "subsampling.conv1.bias": (c,),
              "subsampling.conv2.weight": (c, c, k, k), "subsampling.conv2.bias": (c,),
              "subsampling.out.weight": (d, c * arch.subsampled_bins), "subsampling.out.bias": (d,)}
    for index in range(arch.n_layers):
        shapes.update(encoder_block_tensors(f"encoder.layers.{index}.", d, arch.d_ff, arch.conv_kernel))
    shapes.update({"encoder.norm.weight": (d,), "ctc_head.weight": (arch.vocab_size, d),
                   "ctc_head.bias": (arch.vocab_size,)})
    return shapes


def count_parameters(arch: AudioEncoderArchitecture) -> int:
    """Parameters of a model of `arch`."""
    return sum(numel(shape) for shape in expected_tensors(arch).values())


def count_non_embedding_parameters(arch: AudioEncoderArchitecture) -> int:
    """Parameters outside the CTC head (there is no token embedding)."""
    return count_parameters(arch) - arch.vocab_size * (arch.d_model + 1)

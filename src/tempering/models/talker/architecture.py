"""Every dimension of the `talker` family (text to speech), its presets and tensors. Data only: no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tempering.models.sequence_encoder_shapes import (
    check_encoder_dimensions,
    encoder_block_tensors,
    numel,
)

MODEL_TYPE = "tempering_talker"


@dataclass(frozen=True)
class TalkerArchitecture:
    """Characters → encoder blocks → durations → frames (each character's state repeated) → decoder blocks → log-mel."""

    vocab_size: int  # input classes: the ASR checkpoint's characters (durations come from its alignments)
    pad_id: int
    d_model: int
    n_layers: int  # encoder blocks over characters; the decoder over frames has as many
    n_heads: int
    d_ff: int
    n_mels: int = 80
    conv_kernel: int = 5  # convolution module in each block (0: plain transformer)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model, naming the model.* key."""
        check_encoder_dimensions(self, ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "n_mels"))

    def with_overrides(self, **overrides) -> TalkerArchitecture:
        """Return a copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain dict of the dimensions."""
        return asdict(self)


# vocab_size and pad_id follow the ASR checkpoint's character tokenizer.
PRESETS: dict[str, TalkerArchitecture] = {
    "talker_tiny": TalkerArchitecture(vocab_size=32, pad_id=2, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                      conv_kernel=3),
    "talker_small": TalkerArchitecture(vocab_size=32, pad_id=2, d_model=192, n_layers=4, n_heads=2, d_ff=768,
                                       conv_kernel=5),
}


def expected_tensors(arch: TalkerArchitecture) -> dict[str, tuple[int, ...]]:
    """The tensors Talker.export_state_dict writes for `arch`, by name and shape."""
    d = arch.d_model
    shapes = {"embed_tokens.weight": (arch.vocab_size, d), "frame_position.weight": (d, 1),
              "frame_position.bias": (d,)}
    for stack in ("encoder", "decoder"):
        for index in range(arch.n_layers):
            shapes.update(encoder_block_tensors(f"{stack}.layers.{index}.", d, arch.d_ff, arch.conv_kernel))
        shapes[f"{stack}.norm.weight"] = (d,)
    shapes.update({"duration_head.weight": (1, d), "duration_head.bias": (1,),
                   "mel_head.weight": (arch.n_mels, d), "mel_head.bias": (arch.n_mels,)})
    return shapes


def count_parameters(arch: TalkerArchitecture) -> int:
    """Parameters of a model of `arch`."""
    return sum(numel(shape) for shape in expected_tensors(arch).values())

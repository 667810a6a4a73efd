"""The audio encoder: log-mel frames → 4x convolutional subsampling → encoder blocks → CTC logits per frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tempering.models.audio_encoder.architecture import (
    SUBSAMPLING_KERNEL,
    AudioEncoderArchitecture,
)
from tempering.models.sequence_encoder import SequenceEncoder, init_encoder_weights, padding_mask


class ConvSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions over (time, mel) and a projection: (B, T, n_mels) -> (B, ~T/4, D)."""

    def __init__(self, arch: AudioEncoderArchitecture):
        super().__init__()
        self.conv1 = nn.Conv2d(1, arch.conv_channels, SUBSAMPLING_KERNEL, stride=2)
        self.conv2 = nn.Conv2d(arch.conv_channels, arch.conv_channels, SUBSAMPLING_KERNEL, stride=2)
        self.out = nn.Linear(arch.conv_channels * arch.subsampled_bins, arch.d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Unpadded convolutions: an output frame below the subsampled length reads only real input frames.
        h = F.gelu(self.conv1(features.unsqueeze(1)))  # (B, C, T/2, bins/2)
        h = F.gelu(self.conv2(h))  # (B, C, T/4, bins/4)
        batch, channels, frames, bins = h.shape
        return self.out(h.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins))  # (B, T/4, D)


class AudioEncoder(nn.Module):
    """Speech recognition model: per-frame CTC logits over the tokenizer's classes (blank = `arch.blank_id`)."""

    def __init__(self, arch: AudioEncoderArchitecture, dropout: float = 0.0):
        super().__init__()
        arch.check()
        self.arch = arch
        self.subsampling = ConvSubsampling(arch)
        self.encoder = SequenceEncoder(arch.d_model, arch.n_layers, arch.n_heads, arch.d_ff,
                                       conv_kernel=arch.conv_kernel, rope_theta=arch.rope_theta, eps=arch.norm_eps,
                                       dropout=dropout)
        self.ctc_head = nn.Linear(arch.d_model, arch.vocab_size)
        self.dropout = dropout
        init_encoder_weights(self.encoder, arch.n_layers)
        init_encoder_weights(self.ctc_head, arch.n_layers)

    @property
    def gradient_checkpointing(self) -> bool:
        """Recompute each block's activations in the backward pass."""
        return self.encoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.encoder.gradient_checkpointing = value

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) features and (B,) lengths -> ((B, T', V) CTC logits, (B,) output lengths)."""
        x = self.subsampling(features)  # (B, T', D)
        lengths = output_lengths(feature_lengths)
        mask = padding_mask(lengths, x.shape[1])  # (B, T')
        if self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        return self.ctc_head(self.encoder(x, mask)), lengths

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors to save, by name."""
        return {name: t.detach().contiguous() for name, t in self.state_dict().items()}

    def load_exported_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by `export_state_dict`."""
        self.load_state_dict(state, strict=True)


def output_lengths(feature_lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames of each utterance (the two stride-2 unpadded convolutions), as a tensor."""
    once = torch.div(feature_lengths - SUBSAMPLING_KERNEL, 2, rounding_mode="floor") + 1
    return (torch.div(once - SUBSAMPLING_KERNEL, 2, rounding_mode="floor") + 1).clamp_min(0)


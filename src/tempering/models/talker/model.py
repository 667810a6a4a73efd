"""The Talker: characters → durations → log-mel frames (non-autoregressive, FastSpeech-style), vocoded by Griffin-Lim."""

from __future__ import annotations

import torch
from torch import nn

from tempering.models.sequence_encoder import SequenceEncoder, init_encoder_weights, padding_mask
from tempering.models.talker.architecture import TalkerArchitecture

MAX_FRAMES_PER_CHARACTER = 40  # 0.4 s: a predicted duration is clipped here, so a bad prediction cannot explode


class Talker(nn.Module):
    """Text to log-mel: an encoder over characters, a duration per character, a decoder over the expanded frames."""

    def __init__(self, arch: TalkerArchitecture, dropout: float = 0.0):
        super().__init__()
        arch.check()
        self.arch = arch
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.d_model)
        blocks = {"n_heads": arch.n_heads, "d_ff": arch.d_ff, "conv_kernel": arch.conv_kernel,
                  "rope_theta": arch.rope_theta, "eps": arch.norm_eps, "dropout": dropout}
        self.encoder = SequenceEncoder(arch.d_model, arch.n_layers, **blocks)
        self.duration_head = nn.Linear(arch.d_model, 1)
        self.frame_position = nn.Linear(1, arch.d_model)  # where a frame sits inside its character (0..1)
        self.decoder = SequenceEncoder(arch.d_model, arch.n_layers, **blocks)
        self.mel_head = nn.Linear(arch.d_model, arch.n_mels)
        for part in (self.embed_tokens, self.encoder, self.duration_head, self.frame_position, self.decoder,
                     self.mel_head):
            init_encoder_weights(part, arch.n_layers)
        self.gradient_checkpointing = False

    def forward(self, tokens: torch.Tensor, token_lengths: torch.Tensor,
                durations: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """((B, T, n_mels) log-mel, (B, N) predicted log(1 + duration), (B,) frames); given or predicted durations."""
        token_mask = padding_mask(token_lengths, tokens.shape[1])  # (B, N)
        states = self.encoder(self.embed_tokens(tokens), token_mask)  # (B, N, D)
        log_durations = self.duration_head(states).squeeze(-1)  # (B, N)
        if durations is None:
            durations = predicted_frames(log_durations, token_mask)
        durations = durations * token_mask
        frames, frame_lengths = self._expand(states, durations)  # (B, T, D)
        frame_mask = padding_mask(frame_lengths, frames.shape[1])
        return self.mel_head(self.decoder(frames, frame_mask)), log_durations, frame_lengths

    def _expand(self, states: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Repeat each character's state over its frames, plus the frame's position inside the character."""
        frame_lengths = durations.sum(1)  # (B,)
        width = max(int(frame_lengths.max()), 1)
        rows = []
        for row in range(states.shape[0]):
            counts = durations[row]
            index = torch.repeat_interleave(torch.arange(len(counts), device=states.device), counts)  # (T_b,)
            starts = torch.cumsum(counts, 0) - counts
            within = (torch.arange(len(index), device=states.device) - starts[index]) / counts[index].clamp_min(1)
            expanded = states[row, index] + self.frame_position(within[:, None].to(states.dtype))  # (T_b, D)
            rows.append(nn.functional.pad(expanded, (0, 0, 0, width - len(index))))
        return torch.stack(rows), frame_lengths

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors to save, by name."""
        return {name: t.detach().contiguous() for name, t in self.state_dict().items()}

    def load_exported_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by `export_state_dict`."""
        self.load_state_dict(state, strict=True)


def predicted_frames(log_durations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N) whole frames from predicted log(1 + duration), at least 1 per real character, clipped."""
    frames = torch.round(torch.expm1(log_durations.float())).long().clamp(1, MAX_FRAMES_PER_CHARACTER)
    return frames * mask

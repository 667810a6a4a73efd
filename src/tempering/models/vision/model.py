"""The vision captioner: a ViT encoder (SigLIP layout) and an MLP projector feeding a Llama-style decoder.

Image patches become `num_patches` embeddings in the language model's space, placed before
the text tokens (LLaVA-style prefix); the decoder then reads them like any earlier token.
Parameter names equal transformers' `LlavaForConditionalGeneration` (v5) with a
`SiglipVisionModel` tower, and the numerics follow it (LLaVA reads the tower's last encoder
layer before its post-norm; the projector is linear → GELU → linear), so a checkpoint loads
there with the same logits (not with `patch_embed: conv`, a stem transformers has no class
for). The encoder is written by hand for the same reason the decoder is: a few lines over
`F.scaled_dot_product_attention`, with names and numerics that must match transformers
exactly. The decoder blocks are the llama family's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tempering.models.layers import KVCache, RMSNorm, residual_std
from tempering.models.llama.model import (
    INIT_STD,
    DecoderBackbone,
    attention_mask_for,
    rotary_for_positions,
)
from tempering.models.vision.architecture import UNUSED_POST_NORM, VisionArchitecture, stem_widths


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """(grid*grid, width) fixed 2-D sin-cos position table (MAE's): half the channels encode rows, half columns."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (W/4,)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for axis in (rows.reshape(-1), cols.reshape(-1)):
        angles = axis[:, None] * omega[None, :]  # (P, W/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()  # (P, W)


class EncoderAttention(nn.Module):
    """Bidirectional multi-head self-attention with biases (SigLIP's)."""

    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend (B, P, D) -> (B, P, D); every patch sees every patch."""
        batch, length, width = x.shape
        # (B, P, D) -> (B, P, H, hd) -> (B, H, P, hd)
        q, k, v = (proj(x).view(batch, length, self.n_heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, P, hd)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class EncoderMlp(nn.Module):
    """fc2(gelu_tanh(fc1(x)))."""

    def __init__(self, width: int, d_ff: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, d_ff), nn.Linear(d_ff, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, P, D)."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EncoderLayer(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, arch: VisionArchitecture):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(arch.d_model, eps=arch.norm_eps)
        self.self_attn = EncoderAttention(arch.d_model, arch.n_heads)
        self.layer_norm2 = nn.LayerNorm(arch.d_model, eps=arch.norm_eps)
        self.mlp = EncoderMlp(arch.d_model, arch.d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, P, D) through attention and MLP, each on its own pre-norm residual branch."""
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


def conv_stem(arch: VisionArchitecture) -> nn.Sequential:
    """3x3 convolutions with GELU between them: stride 1, then stride 2 until the grid is image_size / patch_size."""
    layers: list[nn.Module] = []
    channels = 3
    for index, width in enumerate(stem_widths(arch)):
        if layers:
            layers.append(nn.GELU())
        layers.append(nn.Conv2d(channels, width, 3, stride=1 if index == 0 else 2, padding=1))
        channels = width
    return nn.Sequential(*layers)


class PatchEmbeddings(nn.Module):
    """Patches (one strided convolution, or a conv stem) plus a learned (2-D sin-cos initialised) position table."""

    def __init__(self, arch: VisionArchitecture):
        super().__init__()
        if arch.patch_embed == "conv":
            self.patch_embedding = conv_stem(arch)
        else:
            self.patch_embedding = nn.Conv2d(3, arch.d_model, kernel_size=arch.patch_size, stride=arch.patch_size)
        self.position_embedding = nn.Embedding(arch.num_patches, arch.d_model)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, P, D), patches in row-major order."""
        patches = self.patch_embedding(pixels.to(self.position_embedding.weight.dtype))  # (B, D, H/p, W/p)
        return patches.flatten(2).transpose(1, 2) + self.position_embedding.weight  # (B, P, D)


class VisionTransformer(nn.Module):
    """The `vision_model` of a SiglipVisionModel: embeddings and encoder layers (no pooling head)."""

    def __init__(self, arch: VisionArchitecture):
        super().__init__()
        self.embeddings = PatchEmbeddings(arch)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(arch) for _ in range(arch.n_layers))


class VisionTower(nn.Module):
    """Holds `vision_model`, as transformers' SiglipVisionModel does (its parameter names)."""

    def __init__(self, arch: VisionArchitecture):
        super().__init__()
        self.vision_model = VisionTransformer(arch)


class Projector(nn.Module):
    """linear_2(gelu(linear_1(x))): encoder width -> the LM's embedding width (LLaVA's projector)."""

    def __init__(self, width: int, lm_width: int):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(width, lm_width), nn.Linear(lm_width, lm_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, D) encoder features -> (B, P, D_lm) language-model inputs."""
        return self.linear_2(F.gelu(self.linear_1(x)))


class CaptionModel(nn.Module):
    """Image encoder + projector + decoder LM; `state_dict()` keys equal LlavaForConditionalGeneration's."""

    def __init__(self, arch: VisionArchitecture, dropout: float = 0.0):
        super().__init__()
        if arch.lm is None:
            raise ValueError("a vision model needs its language model's architecture (arch.lm)")
        arch.check()
        self.arch = arch
        self.model = nn.Module()
        self.model.vision_tower = VisionTower(arch)
        self.model.multi_modal_projector = Projector(arch.d_model, arch.lm.d_model)
        self.model.language_model = DecoderBackbone(arch.lm, dropout)
        self.lm_head = nn.Linear(arch.lm.d_model, arch.lm.vocab_size, bias=False)
        if arch.lm.tie_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight
        self.gradient_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Linear, conv and embedding weights ~ normal(0, 0.02), biases 0, norms 1; positions 2-D sin-cos; a conv stem He.

        The language model is initialised the llama family's way, though a run loads it from `--lm`.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        grid = self.arch.image_size // self.arch.patch_size
        self.vision_model.embeddings.position_embedding.weight.copy_(sincos_2d(grid, self.arch.d_model))
        if self.arch.patch_embed == "conv":  # He init keeps the activations' scale through the stem's GELUs
            for conv in self.vision_model.embeddings.patch_embedding:
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        out_std = residual_std(INIT_STD, self.arch.lm.n_layers)
        for layer in self.model.language_model.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, mean=0.0, std=out_std)
            nn.init.normal_(layer.mlp.down_proj.weight, mean=0.0, std=out_std)

    @property
    def vision_model(self) -> VisionTransformer:
        """The encoder (embeddings and layers)."""
        return self.model.vision_tower.vision_model

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, P, D_lm) embeddings in the language model's space."""
        x = self.vision_model.embeddings(pixels)  # (B, P, D)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.vision_model.encoder.layers:
            x = checkpoint(layer, x, use_reentrant=False) if checkpointing else layer(x)
        return self.model.multi_modal_projector(x)

    def hidden_states(self, input_ids: torch.Tensor, *, pixels: torch.Tensor | None = None,
                      kv_cache: KVCache | None = None) -> torch.Tensor:
        """(B, P + T, D) final-norm outputs of [image embeddings, token embeddings] ((B, T, D) without pixels)."""
        lm = self.model.language_model
        x = lm.embed_tokens(input_ids)  # (B, T, D)
        if pixels is not None:
            x = torch.cat([self.image_embeddings(pixels).to(x.dtype), x], dim=1)  # (B, P + T, D)
        seq_len = x.shape[1]
        start = 0 if kv_cache is None else kv_cache.length
        cos, sin = rotary_for_positions(lm.rope_cos, lm.rope_sin, None, start, seq_len)
        attn_bias, is_causal = attention_mask_for(None, kv_cache, seq_len, x)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer_idx, layer in enumerate(lm.layers):
            if checkpointing and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, attn_bias, is_causal, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attn_bias, is_causal, kv_cache, layer_idx)
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        return lm.norm(x)

    def forward(self, input_ids: torch.Tensor, *, pixels: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """(B, P + T, V) logits over [image, text] positions ((B, T, V) without pixels: a plain text LM)."""
        return self.lm_head(self.hidden_states(input_ids, pixels=pixels, kv_cache=kv_cache))

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, *,
                     dtype: torch.dtype | None = None) -> KVCache:
        """Allocate a KV cache for `batch_size` sequences of up to `max_len` positions (image positions included)."""
        lm, weight = self.arch.lm, self.lm_head.weight
        return KVCache(lm.n_layers, batch_size, lm.n_kv_heads, max_len or lm.max_seq_len, lm.head_dim,
                       dtype=dtype or weight.dtype, device=weight.device)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors to save, LLaVA-style: a tied `lm_head.weight` left out, the tower's unused post-norm added."""
        state = {name: t.detach().contiguous() for name, t in self.state_dict().items()}
        if self.arch.lm.tie_embeddings:
            del state["lm_head.weight"]
        weight = self.lm_head.weight
        state[UNUSED_POST_NORM[0]] = torch.ones(self.arch.d_model, dtype=weight.dtype, device=weight.device)
        state[UNUSED_POST_NORM[1]] = torch.zeros(self.arch.d_model, dtype=weight.dtype, device=weight.device)
        return state

    def load_exported_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by `export_state_dict` (or by transformers), filling a tied head."""
        state = {name: tensor for name, tensor in state.items() if name not in UNUSED_POST_NORM}
        if self.arch.lm.tie_embeddings and "lm_head.weight" not in state:
            state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
        self.load_state_dict(state, strict=True)


def lm_weights_for_captioner(decoder_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A decoder checkpoint's tensors (`model.*`, `lm_head.weight`) under the captioner's names."""
    return {name if name == "lm_head.weight" else "model.language_model." + name.removeprefix("model."): tensor
            for name, tensor in decoder_state.items()}


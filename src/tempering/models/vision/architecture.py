"""Every dimension of the vision captioner — a ViT encoder, an MLP projector and the decoder LM it feeds — and its presets.

Data only: nothing here imports torch. The encoder's dimensions are the preset's (with
`model.*` overrides); the language model's are those of the decoder checkpoint a run
starts from (`--lm`), so a preset alone has `lm = None` until a stage fills it in.
Parameter names are Hugging Face LLaVA's (transformers 5: `model.vision_tower.vision_model.*`
— a SigLIP vision tower — `model.multi_modal_projector.*`, `model.language_model.*`,
`lm_head`), so a checkpoint is a `LlavaForConditionalGeneration` directory — unless
`patch_embed` is "conv": a small convolutional stem in place of SigLIP's one strided
convolution learns shapes in far fewer steps (docs/performance.md, "Image captioning"), but no
transformers vision tower has it, so such a checkpoint is Tempering's own (`CONV_STEM_MODEL_TYPE`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tempering.errors import UserError
from tempering.models.llama.architecture import Architecture as LmArchitecture
from tempering.models.llama.architecture import expected_tensors as lm_expected_tensors

TOWER = "model.vision_tower.vision_model."
PROJECTOR = "model.multi_modal_projector."
LANGUAGE_MODEL = "model.language_model."
# Written for transformers' SiglipVisionModel, never used: LLaVA reads the last encoder layer's
# output before this norm (vision_feature_layer -1), so checkpoints carry it at its initial value.
UNUSED_POST_NORM = (f"{TOWER}post_layernorm.weight", f"{TOWER}post_layernorm.bias")
ENCODER_KEYS = ("image_size", "patch_size", "d_model", "n_layers", "n_heads", "d_ff")
PATCH_EMBEDS = ("linear", "conv")  # one strided convolution (SigLIP's), or a 3x3 convolutional stem
OVERRIDE_KEYS = (*ENCODER_KEYS, "patch_embed")  # the model.* keys a vision preset takes
STEM_FIRST_WIDTH = 32  # channels of the stem's first convolution; each stride-2 one doubles them


@dataclass(frozen=True)
class VisionArchitecture:
    """A ViT image encoder (SigLIP layout), a 2-layer MLP projector, and the decoder LM (`lm`) that writes captions."""

    image_size: int  # square input, pixels per side
    patch_size: int
    d_model: int  # encoder width
    n_layers: int
    n_heads: int
    d_ff: int
    norm_eps: float = 1e-6
    lm: LmArchitecture | None = None  # from the --lm checkpoint; None in a bare preset
    image_token_id: int = 0  # the token id transformers' LLaVA replaces with image features
    patch_embed: str = "linear"  # one of PATCH_EMBEDS

    @property
    def num_patches(self) -> int:
        """Image positions placed before the text: (image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def vocab_size(self) -> int | None:
        """The language model's vocabulary."""
        return self.lm.vocab_size if self.lm else None

    @property
    def max_seq_len(self) -> int | None:
        """The language model's context (image positions included)."""
        return self.lm.max_seq_len if self.lm else None

    def check(self) -> None:
        """Raise UserError if the dimensions cannot form a model, naming the model.* key."""
        for name in ENCODER_KEYS:
            if getattr(self, name) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.patch_embed not in PATCH_EMBEDS:
            raise UserError(f"model.patch_embed is {self.patch_embed!r}; choose one of {', '.join(PATCH_EMBEDS)}")
        if self.patch_embed == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise UserError(f"model.patch_embed conv halves the image per stride-2 convolution, so model.patch_size "
                            f"must be a power of two (2, 4, 8, 16...), got {self.patch_size}")
        if self.image_size % self.patch_size:
            raise UserError(f"model.image_size ({self.image_size}) must be a multiple of model.patch_size "
                            f"({self.patch_size})")
        if self.d_model % self.n_heads:
            raise UserError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.d_model % 4:
            raise UserError(f"model.d_model ({self.d_model}) must be a multiple of 4 (2-D sin-cos positions)")
        if self.lm is not None:
            self.lm.check()
            if self.num_patches >= self.lm.max_seq_len:
                raise UserError(f"{self.num_patches} image positions do not fit the language model's context of "
                                f"{self.lm.max_seq_len}; raise model.patch_size or lower model.image_size")

    def with_overrides(self, **overrides) -> VisionArchitecture:
        """Return a copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain dict of the dimensions."""
        return asdict(self)


PRESETS: dict[str, VisionArchitecture] = {
    # For tests: 16 patches of 8x8 pixels, two narrow blocks; seconds per run.
    "vision_tiny": VisionArchitecture(image_size=32, patch_size=8, d_model=32, n_layers=2, n_heads=2, d_ff=64),
    # The demo and the benchmark: 64 patches of 8x8 pixels, a few CPU minutes to useful captions.
    "vision_small": VisionArchitecture(image_size=64, patch_size=8, d_model=192, n_layers=4, n_heads=4, d_ff=512),
}


def stem_widths(arch: VisionArchitecture) -> list[int]:
    """Channels after each 3x3 convolution of the conv stem: stride 1, then log2(patch_size) of stride 2, ending at d_model."""
    strided = arch.patch_size.bit_length() - 1
    return [STEM_FIRST_WIDTH * 2 ** index for index in range(strided)] + [arch.d_model]


def patch_embedding_tensors(arch: VisionArchitecture) -> dict[str, tuple[int, ...]]:
    """The patch embedding's tensors: one conv of patch_size x patch_size, or the stem's 3x3 convs (Sequential indices)."""
    prefix = f"{TOWER}embeddings.patch_embedding."
    if arch.patch_embed == "linear":
        return {prefix + "weight": (arch.d_model, 3, arch.patch_size, arch.patch_size), prefix + "bias": (arch.d_model,)}
    shapes, channels = {}, 3
    for index, width in enumerate(stem_widths(arch)):  # a GELU sits between convolutions: indices 0, 2, 4...
        shapes[f"{prefix}{2 * index}.weight"], shapes[f"{prefix}{2 * index}.bias"] = (width, channels, 3, 3), (width,)
        channels = width
    return shapes


def encoder_tensors(arch: VisionArchitecture) -> dict[str, tuple[int, ...]]:
    """The vision tower's and projector's tensors by name and shape (the LM's come from the llama family)."""
    d = arch.d_model
    shapes = {**patch_embedding_tensors(arch), f"{TOWER}embeddings.position_embedding.weight": (arch.num_patches, d)}
    block = {"layer_norm1.weight": (d,), "layer_norm1.bias": (d,), "layer_norm2.weight": (d,),
             "layer_norm2.bias": (d,), "mlp.fc1.weight": (arch.d_ff, d), "mlp.fc1.bias": (arch.d_ff,),
             "mlp.fc2.weight": (d, arch.d_ff), "mlp.fc2.bias": (d,)}
    for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
        block.update({f"self_attn.{projection}.weight": (d, d), f"self_attn.{projection}.bias": (d,)})
    for index in range(arch.n_layers):
        shapes.update({f"{TOWER}encoder.layers.{index}.{name}": shape for name, shape in block.items()})
    shapes.update({name: (d,) for name in UNUSED_POST_NORM})
    if arch.lm is not None:
        width = arch.lm.d_model
        shapes.update({f"{PROJECTOR}linear_1.weight": (width, d), f"{PROJECTOR}linear_1.bias": (width,),
                       f"{PROJECTOR}linear_2.weight": (width, width), f"{PROJECTOR}linear_2.bias": (width,)})
    return shapes


def expected_tensors(arch: VisionArchitecture) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of `arch` holds: encoder, projector, and the LM under LLaVA's names."""
    shapes = encoder_tensors(arch)
    if arch.lm is not None:
        for name, shape in lm_expected_tensors(arch.lm).items():
            shapes[name if name == "lm_head.weight" else LANGUAGE_MODEL + name.removeprefix("model.")] = shape
    return shapes


def count_parameters(arch: VisionArchitecture) -> int:
    """Parameters of the model (the LM's too once known; a tied head once; the unused post-norm not counted)."""
    return sum(_numel(shape) for name, shape in expected_tensors(arch).items() if name not in UNUSED_POST_NORM)


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count

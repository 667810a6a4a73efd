"""Names and shapes of `sequence_encoder`'s tensors, without importing torch (family declarations use them)."""

from __future__ import annotations

from tempering.errors import UserError


def encoder_block_tensors(prefix: str, d_model: int, d_ff: int, conv_kernel: int) -> dict[str, tuple[int, ...]]:
    """Name → shape of one EncoderBlock's tensors under `prefix` (e.g. `encoder.layers.0.`)."""
    shapes = {f"self_attn.{p}_proj.weight": (d_model, d_model) for p in "qkvo"}
    shapes.update({"mlp.gate_proj.weight": (d_ff, d_model), "mlp.up_proj.weight": (d_ff, d_model),
                   "mlp.down_proj.weight": (d_model, d_ff), "input_layernorm.weight": (d_model,),
                   "post_attention_layernorm.weight": (d_model,)})
    if conv_kernel:
        shapes.update({"conv_layernorm.weight": (d_model,), "conv.pointwise_in.weight": (2 * d_model, d_model),
                       "conv.pointwise_in.bias": (2 * d_model,), "conv.depthwise.weight": (d_model, 1, conv_kernel),
                       "conv.depthwise.bias": (d_model,), "conv.norm.weight": (d_model,),
                       "conv.pointwise_out.weight": (d_model, d_model), "conv.pointwise_out.bias": (d_model,)})
    return {prefix + name: shape for name, shape in shapes.items()}


def numel(shape: tuple[int, ...]) -> int:
    """Elements of a tensor of `shape`."""
    count = 1
    for size in shape:
        count *= size
    return count


def check_encoder_dimensions(arch, positive: tuple[str, ...]) -> None:
    """UserError naming the model.* key when `arch` cannot form a SequenceEncoder (speech families' rules)."""
    for name in positive:
        if getattr(arch, name) <= 0:
            raise UserError(f"model.{name} must be positive, got {getattr(arch, name)}")
    if arch.d_model % arch.n_heads or (arch.d_model // arch.n_heads) % 2:
        raise UserError(f"model.d_model ({arch.d_model}) must be model.n_heads ({arch.n_heads}) times an even "
                        "head width")
    if arch.conv_kernel < 0 or (arch.conv_kernel and arch.conv_kernel % 2 == 0):
        raise UserError(f"model.conv_kernel must be 0 or odd, got {arch.conv_kernel}")

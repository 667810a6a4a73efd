"""`temper generate --image`: caption one image with a vision checkpoint (greedy, KV-cached)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import torch

from tempering.checkpoint.model_loading import load_model
from tempering.data.images.batches import IGNORE
from tempering.data.images.pixels import load_image, normalise
from tempering.errors import UserError
from tempering.training.captioning import greedy_captions
from tempering.training.captioning_run import trains_captions
from tempering.training.device import pick_device


def run_caption(checkpoint: str, image: str, *, prompt: str | None, max_new_tokens: int, device: str,
                out: TextIO = sys.stdout) -> str:
    """Write the greedy caption of `image` (after `prompt`, default the one the checkpoint trained with) to `out`."""
    loaded = load_model(checkpoint, device=pick_device(device))
    if not trains_captions(loaded.family):
        raise UserError(f"--image needs a vision checkpoint; {loaded.checkpoint.path} holds a "
                        f"{loaded.family.name} model (give --prompt TEXT alone to continue text)")
    if not Path(image).is_file():
        raise UserError(f"--image {image} does not exist")
    try:
        pixels = normalise(load_image(image, loaded.arch.image_size)[None])  # (1, 3, S, S)
    except OSError as exc:
        raise UserError(f"--image {image}: not an image Pillow can read ({exc})") from None
    tokenizer, arch = loaded.tokenizer, loaded.arch
    text = (loaded.checkpoint.meta.get("prompt") or "") if prompt is None else prompt
    prompt_ids = tokenizer.encode(text) if text else []
    room = arch.lm.max_seq_len - arch.num_patches - len(prompt_ids)
    if room < 1:
        raise UserError(f"--prompt takes {len(prompt_ids)} tokens: no room for a caption after "
                        f"{arch.num_patches} image positions in a context of {arch.lm.max_seq_len}")
    device_of = next(loaded.model.parameters()).device
    # One row whose labels mark where the prompt ends (the caption is what greedy_captions writes).
    row = torch.tensor([[*prompt_ids, tokenizer.eos_id]], device=device_of)
    labels = torch.full_like(row, IGNORE)
    labels[0, -1] = tokenizer.eos_id
    batch = {"pixels": torch.from_numpy(pixels).to(device_of), "tokens": row, "labels": labels}
    caption = tokenizer.decode(greedy_captions(loaded.model, batch, tokenizer.eos_id,
                                               max_new_tokens=min(max_new_tokens, room))[0]).strip()
    out.write(caption + "\n")
    return caption

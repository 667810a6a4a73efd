"""Images to model inputs: read with Pillow, centre-crop to a square, resize, augment, normalise.

Pillow does the decoding and resampling. The augmentation is a few numpy lines by hand: it
must be a pure function of a seed (so a resumed run sees the same pixels), keep spatial
relations ("left of") intact — no flips, no crops that drop objects — and run in the
prefetch thread without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tempering.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SHIFT_FRACTION = 16  # augmentation shifts by up to 1/16 of the side
JITTER = 0.1  # brightness and contrast vary by up to ±10%


def pillow():
    """The PIL.Image module; UserError with the install command when Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("images need Pillow: pip install 'tempering[vision]'") from None
    return Image


def load_image(path: str | Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the image centre-cropped to a square and resized (bicubic)."""
    image_module = pillow()
    with image_module.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        if (width, height) != (side, side):
            image = image.crop((left, top, left + side, top + side))
        if side != size:
            image = image.resize((size, size), image_module.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shifted (edge pixels repeated) and brightness/contrast-jittered copy of an (S, S, 3) uint8 image."""
    side = image.shape[0]
    reach = max(side // SHIFT_FRACTION, 1)
    dy, dx = rng.integers(-reach, reach + 1, size=2)
    padded = np.pad(image, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
    shifted = padded[reach + dy:reach + dy + side, reach + dx:reach + dx + side].astype(np.float32)
    brightness, contrast = 1 + rng.uniform(-JITTER, JITTER, size=2)
    mean = shifted.mean()
    jittered = (shifted - mean) * contrast + mean * brightness
    return np.clip(jittered, 0, 255).astype(np.uint8)


def normalise(images: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 in [-1, 1] (SigLIP's mean 0.5, std 0.5)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1.0

"""Built-in image-caption sets drawn by code (`temper sample-corpus --images`): no download, deterministic by seed.

scenes: 64x64 pictures of 1-3 shapes (circle, square, triangle) in four colours and two
        sizes, captioned compositionally from left to right ("a small red circle left of a
        large blue square"; a vertical pair is "X above Y"; three shapes are listed left to
        right). Three (colour, shape) combinations never occur in training; every validation
        scene holds at least one of them, so validation measures generalisation to unseen
        combinations of seen attributes. With `recolour` > 0 that fraction of training shapes is
        painted an off-palette colour (RGB distance >= OFF_PALETTE_DISTANCE from every named
        colour and the background) and captioned "other": shape then varies with pixel colour
        in training, so a model cannot learn "green pixels are never a circle", while no
        training image shows a held-out pair (validation is unchanged).
words:  words of the sample corpus's vocabulary (Python's reference prose, `pydoc_data.topics`)
        rendered in the fonts matplotlib ships (DejaVu, STIX, Computer Modern), caption = the
        word; validation words never occur in training, so it measures reading, not recall.
Pillow draws; the fonts are found through matplotlib, the one place a Python install
reliably carries TrueType fonts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tempering.data.images.pixels import pillow
from tempering.data.images.records import CaptionRecord, val_sibling, write_caption_file
from tempering.errors import UserError

SIZE = 64
BACKGROUND = (240, 240, 240)
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
RADII = {"small": 5, "large": 9}
HELD_OUT = frozenset({("green", "circle"), ("yellow", "square"), ("blue", "triangle")})
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf",
         "DejaVuSansMono.ttf", "STIXGeneral.ttf", "cmr10.ttf", "cmss10.ttf")
WORD_PATTERN = re.compile(r"\b[a-z]{3,7}\b")
NUM_WORDS = 1500  # the most frequent words of the reference prose that the set draws from
VAL_FRACTION = 0.1
OTHER = "other"  # the colour word of an off-palette shape (recolour)
OFF_PALETTE_DISTANCE = 120


@dataclass(frozen=True)
class Shape:
    """One shape of a scene: what it is and where its centre sits."""

    size: str
    colour: str
    kind: str
    x: int
    y: int
    fill: tuple[int, int, int] | None = None  # an off-palette RGB (colour OTHER); None: COLOURS[colour]

    def phrase(self) -> str:
        """'a small red circle'."""
        return f"a {self.size} {self.colour} {self.kind}"


def write_sample_images(output: Path, *, num_images: int = 4000, seed: int = 0, recolour: float = 0.0) -> dict:
    """Write OUTPUT/{scenes,words}.json (+ .val.json) and their PNGs; return {set: {split: images}}."""
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise UserError(f"{output} is not empty; choose a new directory for the sample images")
    num_val = max(1, round(num_images * VAL_FRACTION))
    summary = {}
    rng = np.random.default_rng([seed, 1])
    paint = np.random.default_rng([seed, 4])  # its own stream: recolour leaves every other draw unchanged
    summary["scenes"] = _write_set(output, "scenes", {
        "train": [_scene(rng, held_out=False, paint=paint, recolour=recolour) for _ in range(num_images)],
        "val": [_scene(rng, held_out=True) for _ in range(num_val)]}, _draw_scene)
    train_words, val_words = _split_vocabulary(seed)
    rng = np.random.default_rng([seed, 2])
    summary["words"] = _write_set(output, "words", {
        "train": [_word(rng, train_words) for _ in range(num_images)],
        "val": [_word(rng, val_words) for _ in range(num_val)]}, _draw_word)
    return summary


def _write_set(output: Path, name: str, splits: dict[str, list], draw) -> dict[str, int]:
    counts = {}
    for split, items in splits.items():
        folder = output / name / split
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for index, (caption, spec) in enumerate(items):
            path = folder / f"{index:05d}.png"
            draw(spec).save(path, optimize=False)
            records.append(CaptionRecord(path.resolve(), caption))
        target = output / f"{name}.json"
        write_caption_file(target if split == "train" else val_sibling(target), records)
        counts[split] = len(records)
    return counts


def _scene(rng: np.random.Generator, *, held_out: bool, paint: np.random.Generator | None = None,
           recolour: float = 0.0) -> tuple[str, list[Shape]]:
    """A caption and the shapes of one scene; held_out: at least one unseen combination, else none.

    With `recolour` > 0 each shape is, with that probability (drawn from `paint`), painted an
    off-palette colour and called OTHER.
    """
    count = int(rng.integers(1, 4))
    vertical = count == 2 and rng.random() < 0.5
    slot = SIZE // count
    shapes = []
    forced = int(rng.integers(count)) if held_out else -1
    for index in range(count):
        while True:
            colour, kind = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
            if ((colour, kind) in HELD_OUT) == (index == forced) or (held_out and index != forced):
                break
        size = str(rng.choice(list(RADII)))
        radius = RADII[size]
        along = index * slot + slot // 2 + int(rng.integers(-(slot // 2 - radius - 1), slot // 2 - radius))
        across = int(rng.integers(radius + 3, SIZE - radius - 3))
        x, y = (across, along) if vertical else (along, across)
        shapes.append(Shape(size, colour, kind, x, y))
    if recolour > 0:
        shapes = [replace(s, colour=OTHER, fill=_off_palette(paint)) if paint.random() < recolour else s
                  for s in shapes]
    return _caption(shapes, vertical=vertical), shapes


def _caption(shapes: list[Shape], *, vertical: bool) -> str:
    """'a small red circle left of a large blue square' (shapes in caption order)."""
    phrases = [s.phrase() for s in shapes]
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        return f"{phrases[0]} {'above' if vertical else 'left of'} {phrases[1]}"
    return f"{phrases[0]}, {phrases[1]} and {phrases[2]}"


def _off_palette(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random RGB at least OFF_PALETTE_DISTANCE from every named colour and the background."""
    anchors = np.array([*COLOURS.values(), BACKGROUND], dtype=np.float64)
    while True:
        rgb = rng.integers(0, 256, size=3)
        if np.linalg.norm(anchors - rgb, axis=1).min() >= OFF_PALETTE_DISTANCE:
            return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _draw_scene(shapes: list[Shape]):
    image_module = pillow()
    from PIL import ImageDraw

    image = image_module.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        r, fill = RADII[shape.size], shape.fill or COLOURS[shape.colour]
        box = (shape.x - r, shape.y - r, shape.x + r, shape.y + r)
        if shape.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(shape.x, shape.y - r), (shape.x - r, shape.y + r), (shape.x + r, shape.y + r)], fill=fill)
    return image


def _split_vocabulary(seed: int) -> tuple[list[str], list[str]]:
    """The reference prose's most frequent words, split into training and held-out validation words."""
    from pydoc_data.topics import topics

    counts = Counter(word for text in topics.values() for word in WORD_PATTERN.findall(text.lower()))
    words = sorted(w for w, _ in counts.most_common(NUM_WORDS))
    order = np.random.default_rng([seed, 3]).permutation(len(words))
    num_val = max(1, round(len(words) * VAL_FRACTION))
    return [words[i] for i in order[num_val:]], [words[i] for i in order[:num_val]]


def _word(rng: np.random.Generator, vocabulary: list[str]) -> tuple[str, tuple[str, str, int, int]]:
    word = vocabulary[int(rng.integers(len(vocabulary)))]
    return word, (word, FONTS[int(rng.integers(len(FONTS)))], int(rng.integers(-3, 4)), int(rng.integers(0, 60)))


def _draw_word(spec: tuple[str, str, int, int]):
    image_module = pillow()
    from PIL import ImageDraw, ImageFont

    word, font_name, shift, shade = spec
    image = image_module.new("RGB", (SIZE, SIZE), (255 - shade // 2,) * 3)
    draw = ImageDraw.Draw(image)
    font_size = 22
    while True:  # the largest size (down to 9 px) at which the word fits with a 2-pixel margin
        font = ImageFont.truetype(str(_font_path(font_name)), font_size)
        left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
        if right - left <= SIZE - 4 or font_size <= 9:
            break
        font_size -= 1
    x = (SIZE - (right - left)) // 2 - left
    y = (SIZE - (bottom - top)) // 2 - top + shift
    draw.text((x, y), word, fill=(shade,) * 3, font=font)
    return image


def _font_path(name: str) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise UserError("rendering words needs matplotlib's fonts: pip install 'tempering[vision]'") from None
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name

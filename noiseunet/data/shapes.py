"""Procedural coloured-shapes captioned images: a download-free text-to-image task.

Every image holds exactly one flat-coloured shape on a flat background. That keeps the
task easy enough for a tiny diffusion model trained on a CPU in minutes, and lets
``noiseunet.evaluation.checker`` read colour, shape and position back from the pixels
to score whether a generated image obeys its prompt. A few colour-shape pairs
(``HELD_OUT``) never appear in training, to test compositional generalisation.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .captioned import CaptionedSource
from .checks import Problem

RGB = tuple[int, int, int]

#: Flat black background; every palette colour is >= 190 RGB units away from it,
#: so foreground is a simple distance threshold.
BACKGROUND: RGB = (0, 0, 0)
#: Six colours with ordinary names, pairwise >= 140 RGB units apart.
COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (180, 50, 220),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")  # triangle points upwards
#: Shapes the built-in data never shows: words to teach a trained model by fine-tuning (split "new_word").
NEW_WORD_SHAPES: tuple[str, ...] = ("diamond",)  # a square standing on a corner
POSITIONS: tuple[str, ...] = ("left", "middle", "right")  # thirds of the image width
#: Never used in training; each colour and shape here still appears with other partners.
HELD_OUT: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "circle"), ("blue", "square"))
SPLITS: tuple[str, ...] = ("train", "held_out", "all", "new_word")

_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
_SIDE_RANGE = (0.38, 0.48)  # object side as a fraction of the image side
_CENTRE_JITTER = 0.05  # max horizontal offset from the third's nominal centre (fraction)
_VERTICAL_JITTER = 0.10  # max vertical offset from the image centre (fraction)
_MARGIN = 0.04  # the object centre keeps this far (fraction) from the thirds' borders


@dataclass(frozen=True)
class ShapeSpec:
    """What one image shows: the three attributes a caption names."""

    colour: str
    shape: str
    position: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS or self.shape not in SHAPES + NEW_WORD_SHAPES or self.position not in POSITIONS:
            raise ValueError(f"unknown attribute in {self!r}")

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} {_PHRASES[self.position]}"


def caption(spec: ShapeSpec) -> str:
    """The prompt for ``spec``, e.g. "a red circle on the left"."""
    return spec.caption


def split_specs(split: str) -> list[ShapeSpec]:
    """All (colour, shape, position) specs of a split, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "new_word":
        return [ShapeSpec(c, s, p) for c, s, p in itertools.product(COLOURS, NEW_WORD_SHAPES, POSITIONS)]
    specs = [ShapeSpec(c, s, p) for c, s, p in itertools.product(COLOURS, SHAPES, POSITIONS)]
    if split == "all":
        return specs
    want_held_out = split == "held_out"
    return [s for s in specs if ((s.colour, s.shape) in HELD_OUT) == want_held_out]


def evaluation_specs(held_out: bool) -> list[ShapeSpec]:
    """Every seen (held_out=False) or held-out (held_out=True) spec, in a fixed order."""
    return split_specs("held_out" if held_out else "train")


def render(
    spec: ShapeSpec, size: int = 32, rng: np.random.Generator | None = None
) -> tuple[Image.Image, np.ndarray]:
    """Draw ``spec`` as a ``size``x``size`` RGB image, plus its (size, size) uint8 mask.

    The mask is 0 on background and ``1 + SHAPES.index(shape)`` on the object; the image
    is painted from the mask, so the two agree exactly. ``rng`` jitters size and
    position (the centre stays in its third, the object inside the image); with
    ``rng=None`` the object has its nominal size and place, so rendering is repeatable.
    """
    if not 16 <= size <= 128:
        raise ValueError(f"size must be in 16..128, got {size}")
    u = rng.random(3) if rng is not None else np.full(3, 0.5)
    side = max(3, round(size * (_SIDE_RANGE[0] + (_SIDE_RANGE[1] - _SIDE_RANGE[0]) * u[0])))
    k = POSITIONS.index(spec.position)
    lo = max(size * (k / 3 + _MARGIN), side / 2)
    hi = min(size * ((k + 1) / 3 - _MARGIN), size - side / 2)
    cx = float(np.clip(size * ((2 * k + 1) / 6 + _CENTRE_JITTER * (2 * u[1] - 1)), lo, hi))
    cy = float(np.clip(size * (0.5 + _VERTICAL_JITTER * (2 * u[2] - 1)), side / 2, size - side / 2))
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + side - 1, y0 + side - 1  # PIL boxes include both corners

    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    label = 1 + (SHAPES + NEW_WORD_SHAPES).index(spec.shape)
    if spec.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=label)
    elif spec.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=label)
    elif spec.shape == "diamond":
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)], fill=label)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=label)
    mask = np.asarray(mask_image, dtype=np.uint8).copy()
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[...] = BACKGROUND
    pixels[mask > 0] = COLOURS[spec.colour]
    return Image.fromarray(pixels, "RGB"), mask


class ShapesDataset(CaptionedSource):
    """Endless map-style dataset of captioned shape images.

    ``__len__`` is 2**31 - 1 (the largest index samplers handle comfortably), so it
    never runs out. Sample ``i`` depends only on ``(seed, i)``: any sample can be
    regenerated, data order restored exactly on resume, and workers can read disjoint
    index ranges. ``split`` picks the specs drawn from (uniformly): "train" (no held-out
    colour-shape pair), "held_out" (only those) or "all".
    """

    LENGTH = 2**31 - 1

    def __init__(self, size: int = 32, seed: int = 0, split: str = "train") -> None:
        if seed < 0:
            raise ValueError("seed must be non-negative")
        self.size, self.seed, self.split = size, seed, split
        self.specs = split_specs(split)

    def __len__(self) -> int:
        return self.LENGTH

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if not 0 <= index < self.LENGTH:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        spec = self.specs[int(rng.integers(len(self.specs)))]
        image, mask = render(spec, self.size, rng)
        return {"image": image, "caption": spec.caption, "mask": mask, "spec": spec}

    def captions(self, indices=None) -> list[str]:
        """Every combination's caption, held-out ones included, whatever the items asked for: the tokenizer
        must know every word the evaluation uses, and the data is endless."""
        return [spec.caption for spec in split_specs("all")]

    def problem(self, index: int, resolution: int) -> Problem | None:
        return None  # rendered, never broken

    def check(self, resolution: int) -> tuple[range, list[Problem]]:
        return range(len(self)), []  # nothing to read, and far too many items to visit

    def validation_prompts(self, count: int = 4) -> list[str]:
        return list(SAMPLE_PROMPTS[:count])


#: Prompts for grids of the built-in data: seen combinations first, then held-out ones.
SAMPLE_PROMPTS: tuple[str, ...] = (
    "a red circle on the left", "a yellow square in the middle", "a purple triangle on the right",
    "a white circle in the middle", "a red triangle on the left", "a green circle on the right",
    "a blue square in the middle",
)

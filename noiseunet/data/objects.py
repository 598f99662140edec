"""One flat-coloured object of the built-in data: the vocabulary every task family shares, and the painter.

Every family of prompts (``shapes.py``: one object, ``compositions.py``: several) names objects from the
same six colours and three shapes, and none of them ever trains on the colour-shape pairs of ``HELD_OUT``,
so that those stay unseen whatever mixture of families a model learns from. Objects are drawn into a label
map first and the image is painted from it, so the pixels and the mask agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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
#: Never used in training, by any family; each colour and shape here still appears with other partners.
HELD_OUT: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "circle"), ("blue", "square"))
#: Image sides the renderers draw (the checker is exact from 32 up; 16 serves tiny smoke tests).
SIZES = range(16, 129)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; PIL boxes include both corners


@dataclass(frozen=True)
class Placed:
    """One object where a layout put it."""

    colour: str
    shape: str
    box: Box


def check_size(size: int) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be in {SIZES.start}..{SIZES.stop - 1}, got {size}")


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: Box, fill: int) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "diamond":
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)], fill=fill)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)


def paint(objects: Sequence[Placed], size: int) -> tuple[Image.Image, np.ndarray]:
    """The ``size``x``size`` RGB image of ``objects`` (which must not overlap) on the background, and its
    (size, size) uint8 mask: 0 on background, ``1 + (SHAPES + NEW_WORD_SHAPES).index(shape)`` on an object."""
    check_size(size)
    numbers = Image.new("L", (size, size), 0)  # 0 background, k on the k-th object
    draw = ImageDraw.Draw(numbers)
    for number, placed in enumerate(objects, start=1):
        _draw(draw, placed.shape, placed.box, number)
    numbered = np.asarray(numbers)
    labels = np.array([0] + [1 + (SHAPES + NEW_WORD_SHAPES).index(p.shape) for p in objects], dtype=np.uint8)
    colours = np.array([BACKGROUND] + [COLOURS[p.colour] for p in objects], dtype=np.uint8)
    return Image.fromarray(colours[numbered], "RGB"), labels[numbered]

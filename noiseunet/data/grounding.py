"""Where each object a caption names lies in its image: the targets of the grounding loss.

The built-in data is rendered, so the pixels of every object a prompt names are known exactly, and so
are the caption's words that name it ("red circle" in "a red circle to the left of a blue square"). The
grounding loss (``training/grounding.py``) asks the cross-attention of those words to fall on those
pixels, as TokenCompose (Wang et al., CVPR 2024) does with a segmenter's masks for real photos.

An object's pixels are read back from the image and its label mask: those of its shape's label in its
colour. Within one prompt of the built-in families the objects it names differ in colour or in shape
(counting names one object several times: its region is all of them), so that picks each one out.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .compositions import PromptSpec
from .objects import COLOURS, NEW_WORD_SHAPES, SHAPES

#: One named object: the caption's words [start, stop) that name it, and its (H, W) bool pixels.
Region = tuple[int, int, np.ndarray]


def object_regions(spec: PromptSpec, image: Image.Image, mask: np.ndarray) -> list[Region]:
    """The words and pixels of each object ``spec`` names, in the image it rendered (and its label mask)."""
    words, pixels, regions = spec.caption.split(), np.asarray(image), []
    for colour, shape in spec.things:
        start = next((k for k in range(len(words) - 1)
                      if words[k] == colour and words[k + 1] in (shape, shape + "s")), None)
        if start is None:
            raise ValueError(f"{spec.caption!r} does not name a {colour} {shape} as 'colour shape'")
        on = (mask == 1 + (SHAPES + NEW_WORD_SHAPES).index(shape)) & (pixels == COLOURS[colour]).all(axis=-1)
        regions.append((start, start + 2, on))
    return regions


def regions_as_trained(regions: list[Region], caption: str, mirrored: bool) -> list[Region]:
    """``regions`` of a training example: none when its caption was dropped (for guidance), mirrored with it."""
    if not caption:
        return []
    return [(start, stop, on[:, ::-1].copy() if mirrored else on) for start, stop, on in regions]

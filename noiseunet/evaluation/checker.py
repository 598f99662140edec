"""Read colour, shape and position back from a shapes image, to score prompt adherence.

Generated images are noisy and imperfect, so the checker relies on coarse, robust cues:
foreground is whatever is far from ``BACKGROUND``, cleaned by a 3x3 morphological
opening (removes specks and one-pixel spurs, keeps square corners); only the largest
connected blob is kept; colour is the palette entry nearest the median RGB of the
blob's core (its most saturated half, so blurred edges don't wash it out); shape comes
from two scale-free ratios of the blob; position from its centroid's x, in thirds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from noiseunet.data.shapes import BACKGROUND, COLOURS, POSITIONS, SHAPES, ShapeSpec

#: RGB distance from BACKGROUND above which a pixel is foreground (palette colours are >= 190 away).
FOREGROUND_THRESHOLD = 90.0
#: Blobs smaller than this fraction of the image (or 4 pixels) are not read at all.
MIN_AREA_FRACTION = 0.005
#: Smaller images are not opened: their objects are so small that opening erases too much.
MIN_SIZE_TO_OPEN = 24
#: A median colour further than this from every palette colour is not named.
MAX_COLOUR_DISTANCE = 120.0
#: (fill ratio of the bounding box, mean width of top third / bottom third) per shape,
#: as rasterised: a circle fills pi/4 of its box, an upward triangle ~1/2 and is narrow on top;
#: a diamond, as narrow on top as at the bottom, fills 0.645-0.68 once the opening has rounded its
#: corners (measured on 300 renders; circles fill 0.755-0.787).
_PROTOTYPES = {"circle": (0.785, 1.0), "square": (1.0, 1.0), "triangle": (0.5, 0.2), "diamond": (0.66, 1.0)}

_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class ShapeReading:
    """What the checker sees; ``None`` where an attribute cannot be determined."""

    colour: str | None
    shape: str | None
    position: str | None


def _to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {array.shape}")
    return array.astype(np.float32)


def _open3x3(mask: np.ndarray) -> np.ndarray:
    """Binary opening (erode, then dilate) with a 3x3 square."""

    def windows(m: np.ndarray) -> np.ndarray:
        return np.lib.stride_tricks.sliding_window_view(np.pad(m, 1, mode="edge"), (3, 3))

    return windows(windows(mask).all(axis=(2, 3))).any(axis=(2, 3))


def _largest_component(foreground: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest 4-connected component (BFS; images are tiny)."""
    height, width = foreground.shape
    seen = np.zeros_like(foreground, dtype=bool)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(foreground)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        component, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            component.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and foreground[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(component) > len(best):
            best = component
    mask = np.zeros_like(foreground, dtype=bool)
    if best:
        ys, xs = zip(*best)
        mask[list(ys), list(xs)] = True
    return mask


def _classify_shape(blob: np.ndarray, shapes: tuple[str, ...]) -> str:
    """Nearest prototype among ``shapes`` in (bounding-box fill, top/bottom width ratio) space."""
    ys, xs = np.nonzero(blob)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(ys) / float(height * width)
    row_widths = np.bincount(ys - ys.min(), minlength=height).astype(np.float64)
    third = max(1, height // 3)
    taper = min(row_widths[:third].mean() / max(row_widths[-third:].mean(), 1.0), 1.5)
    return min(shapes, key=lambda s: np.hypot(fill - _PROTOTYPES[s][0], taper - _PROTOTYPES[s][1]))


def read_image(image: Image.Image | np.ndarray, shapes: tuple[str, ...] = SHAPES) -> ShapeReading:
    """Read the colour, shape and position of the main object in an RGB image.

    ``image`` is a PIL image or an HxWx3 array of 0..255 values (uint8), of any size. ``shapes`` are the
    shapes it may be: the built-in ones, plus the new word when a fine-tuned model is asked for it (so that
    scores of the built-in prompts do not depend on shapes they never name).
    """
    pixels = _to_array(image)
    height, width = pixels.shape[:2]
    distance = np.linalg.norm(pixels - np.asarray(BACKGROUND, dtype=np.float32), axis=2)
    foreground = distance > FOREGROUND_THRESHOLD
    if min(height, width) >= MIN_SIZE_TO_OPEN:
        foreground = _open3x3(foreground)
    blob = _largest_component(foreground)
    area = int(blob.sum())
    if area < max(4, MIN_AREA_FRACTION * height * width):
        return ShapeReading(None, None, None)

    core = blob & (distance >= np.median(distance[blob]))
    median = np.median(pixels[core], axis=0)
    colour_distances = np.linalg.norm(_PALETTE - median, axis=1)
    nearest = int(colour_distances.argmin())
    colour = _PALETTE_NAMES[nearest] if colour_distances[nearest] <= MAX_COLOUR_DISTANCE else None

    centre_x = (np.nonzero(blob)[1].mean() + 0.5) / width  # pixel centres, in [0, 1]
    position = POSITIONS[min(int(centre_x * 3), 2)]
    return ShapeReading(colour, _classify_shape(blob, shapes), position)


def judge(image: Image.Image | np.ndarray, spec: ShapeSpec) -> dict[str, bool]:
    """Whether ``image`` shows ``spec``: one bool per attribute, and "all" for all three."""
    reading = read_image(image, SHAPES if spec.shape in SHAPES else (*SHAPES, spec.shape))
    result = {
        "colour": reading.colour == spec.colour,
        "shape": reading.shape == spec.shape,
        "position": reading.position == spec.position,
    }
    result["all"] = all(result.values())
    return result

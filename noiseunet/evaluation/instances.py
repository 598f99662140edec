"""Read every object of a shapes image from its pixels: colour, shape, size and where it is.

Generated images are noisy and imperfect, so the reading relies on coarse, robust cues:
foreground is whatever is far from ``BACKGROUND``, cleaned by a 3x3 morphological
opening (removes specks and one-pixel spurs, keeps square corners, and never joins two
objects: an opening only removes pixels); each 4-connected blob of the rest at least
``MIN_AREA_FRACTION`` of the image is one object. Its colour is the palette entry nearest
the median RGB of its core (its most saturated half, so blurred edges don't wash it out);
its shape comes from two scale-free ratios of the blob; its size from the longer side of
its bounding box; its place from its centroid.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from noiseunet.data.compositions import SIZE_SIDES
from noiseunet.data.objects import BACKGROUND, COLOURS, SHAPES

#: RGB distance from BACKGROUND above which a pixel is foreground (palette colours are >= 190 away).
FOREGROUND_THRESHOLD = 90.0
#: Blobs smaller than this fraction of the image (or 4 pixels) are not read at all.
MIN_AREA_FRACTION = 0.005
#: Smaller images are not opened: their objects are so small that opening erases too much.
MIN_SIZE_TO_OPEN = 24
#: A median colour further than this from every palette colour is not named.
MAX_COLOUR_DISTANCE = 120.0
#: An object whose longer side is at least this fraction of the image side is "large", else "small": halfway
#: between the largest small object the data draws and the smallest large one.
LARGE_SIDE = (SIZE_SIDES["small"][1] + SIZE_SIDES["large"][0]) / 2
#: (fill ratio of the bounding box, mean width of top third / bottom third) per shape,
#: as rasterised: a circle fills pi/4 of its box, an upward triangle ~1/2 and is narrow on top;
#: a diamond, as narrow on top as at the bottom, fills 0.645-0.68 once the opening has rounded its
#: corners (measured on 300 renders; circles fill 0.755-0.787).
_PROTOTYPES = {"circle": (0.785, 1.0), "square": (1.0, 1.0), "triangle": (0.5, 0.2), "diamond": (0.66, 1.0)}

_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Instance:
    """One object as the pixels show it; ``colour`` is None when no palette colour is near enough."""

    colour: str | None
    shape: str
    size: str  # "small" or "large"
    centre: tuple[float, float]  # (x, y) of the centroid, in [0, 1], y downwards
    area: int  # pixels


def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An HxWx3 float32 array of 0..255 values, from a PIL image or an array."""
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


def _components(foreground: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the 4-connected components, in the raster order of their first pixel (BFS; images
    are tiny)."""
    height, width = foreground.shape
    seen = np.zeros_like(foreground, dtype=bool)
    components = []
    for y0, x0 in zip(*np.nonzero(foreground)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        pixels, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and foreground[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        mask = np.zeros_like(foreground, dtype=bool)
        ys, xs = zip(*pixels)
        mask[list(ys), list(xs)] = True
        components.append(mask)
    return components


def _classify_shape(blob: np.ndarray, shapes: tuple[str, ...]) -> str:
    """Nearest prototype among ``shapes`` in (bounding-box fill, top/bottom width ratio) space."""
    ys, xs = np.nonzero(blob)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(ys) / float(height * width)
    row_widths = np.bincount(ys - ys.min(), minlength=height).astype(np.float64)
    third = max(1, height // 3)
    taper = min(row_widths[:third].mean() / max(row_widths[-third:].mean(), 1.0), 1.5)
    return min(shapes, key=lambda s: np.hypot(fill - _PROTOTYPES[s][0], taper - _PROTOTYPES[s][1]))


def _read(blob: np.ndarray, pixels: np.ndarray, distance: np.ndarray, shapes: tuple[str, ...]) -> Instance:
    height, width = blob.shape
    core = blob & (distance >= np.median(distance[blob]))
    colour_distances = np.linalg.norm(_PALETTE - np.median(pixels[core], axis=0), axis=1)
    nearest = int(colour_distances.argmin())
    colour = _PALETTE_NAMES[nearest] if colour_distances[nearest] <= MAX_COLOUR_DISTANCE else None
    ys, xs = np.nonzero(blob)
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / max(height, width)
    centre = ((xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height)  # pixel centres, in [0, 1]
    return Instance(colour, _classify_shape(blob, shapes), "large" if side >= LARGE_SIDE else "small",
                    (float(centre[0]), float(centre[1])), len(ys))


def read_instances(image: Image.Image | np.ndarray, shapes: tuple[str, ...] = SHAPES) -> list[Instance]:
    """Every object of an RGB image, largest first (ties in raster order of their first pixel).

    ``image`` is a PIL image or an HxWx3 array of 0..255 values (uint8), of any size. ``shapes`` are the
    shapes an object may be: the built-in ones, plus the new word when a fine-tuned model is asked for it (so
    that scores of the built-in prompts do not depend on shapes they never name).
    """
    pixels = to_array(image)
    height, width = pixels.shape[:2]
    distance = np.linalg.norm(pixels - np.asarray(BACKGROUND, dtype=np.float32), axis=2)
    foreground = distance > FOREGROUND_THRESHOLD
    if min(height, width) >= MIN_SIZE_TO_OPEN:
        foreground = _open3x3(foreground)
    blobs = [b for b in _components(foreground) if b.sum() >= max(4, MIN_AREA_FRACTION * height * width)]
    blobs.sort(key=lambda b: -int(b.sum()))  # stable: equal areas keep their raster order
    return [_read(blob, pixels, distance, shapes) for blob in blobs]

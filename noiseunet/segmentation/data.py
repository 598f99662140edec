"""Segmentation data: a folder of images with masks, or the built-in shapes with theirs.

Folder layout: ``images/NAME.ext`` and ``masks/NAME.png`` (same stem), each mask a single-channel PNG of
class indices (0 = background, 255 = ignore). Shapes masks have 4 classes: background, circle, square,
triangle.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.loader import StreamOrder
from ..data.shapes import SHAPES, ShapesDataset
from ..data.transforms import to_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
SHAPES_CLASSES = ("background",) + SHAPES


class SegmentationFolder(Dataset):
    """``images/`` and ``masks/`` with matching file stems."""

    def __init__(self, root: str | Path):
        root = Path(root)
        images = {p.stem: p for p in sorted((root / "images").glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
        masks = {p.stem: p for p in sorted((root / "masks").glob("*.png"))}
        if not images:
            raise FileNotFoundError(f"{root / 'images'}: no images")
        missing = sorted(set(images) - set(masks))
        if missing:
            raise FileNotFoundError(f"{root / 'masks'}: no mask for {', '.join(missing[:5])}"
                                    f"{' ...' if len(missing) > 5 else ''}")
        self.pairs = [(images[stem], masks[stem]) for stem in sorted(images)]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.pairs[index]
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            if mask.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{mask_path}: a mask must be a single-channel PNG of class indices, not {mask.mode}")
            image.load()  # decode now: the file closes when this block ends
            return {"image": to_rgb(image), "mask": np.asarray(mask).astype(np.int64), "source": str(image_path)}


def open_segmentation_source(data: str | None, resolution: int = 32, seed: int = 0, split: str = "train") -> Dataset:
    """None/"shapes": the built-in shapes (``split="eval"``: other images than training sees); else a folder."""
    if data in (None, "shapes"):
        return ShapesDataset(size=resolution, seed=seed if split == "train" else seed + 1_000_003, split="all")
    return SegmentationFolder(data)


def to_tensors(item: dict, resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image -> (3, H, W) in [-1, 1]; mask -> (H, W) int64; both resized (mask: nearest) when asked."""
    image, mask = item["image"], item["mask"]
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BICUBIC)
        mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize((resolution, resolution), Image.NEAREST))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    return pixels, torch.from_numpy(np.asarray(mask, dtype=np.int64))


def batches(source: Dataset, batch_size: int, resolution: int | None, start: int = 0, seed: int = 0):
    """Endless (images, masks) batches from stream position ``start`` (order as in training text-to-image)."""
    order, position = StreamOrder(len(source), seed), start
    while True:
        pairs = [to_tensors(source[order(p)], resolution) for p in range(position, position + batch_size)]
        position += batch_size
        yield _stacked(pairs)


def evaluation_batches(source: Dataset, count: int, batch_size: int, resolution: int | None):
    """(images, masks) batches of items 0 .. count-1, each exactly once (the last batch may be smaller).

    Without ``resolution``, folder images keep their own size, so a batch closes early where the size changes."""
    pairs = []
    for index in range(count):
        pair = to_tensors(source[index], resolution)
        if pairs and (len(pairs) == batch_size or pair[0].shape != pairs[0][0].shape):
            yield _stacked(pairs)
            pairs = []
        pairs.append(pair)
    if pairs:
        yield _stacked(pairs)


def _stacked(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([p for p, _ in pairs]), torch.stack([m for _, m in pairs])

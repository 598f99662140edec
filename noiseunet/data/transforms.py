"""Image preprocessing for training: any PIL image -> a (3, R, R) float tensor in [-1, 1]."""

import numpy as np
import torch
from PIL import Image

LEFT_RIGHT_WORDS = ("left", "right")


def to_rgb(image: Image.Image) -> Image.Image:
    """Grey, palette, CMYK, 16-bit and RGBA images -> RGB (transparency composited over white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: rescale to 8 bits before converting
        array = np.asarray(image, dtype=np.float64)
        array = array / max(array.max(), 1.0) * 255.0
        return Image.fromarray(array.astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def mentions_left_or_right(caption: str) -> bool:
    """Captions that name a side would be made false by a horizontal flip."""
    words = caption.lower().replace(",", " ").split()
    return any(word in LEFT_RIGHT_WORDS for word in words)


def preprocess(
    image: Image.Image, resolution: int | tuple[int, int], random_crop: bool = False, flip: bool = False,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Resize the shorter side to ``resolution``, crop a square (centre, or random), mirror half of the time
    with ``flip``, scale to [-1, 1]. ``rng`` drives the random choices so that they replay exactly on resume."""
    return augment(image, resolution, random_crop, flip, rng)[0]


def augment(
    image: Image.Image, size: int | tuple[int, int], random_crop: bool = False, flip: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, bool]:
    """``preprocess`` to ``size`` (a square side, or (width, height) of an aspect-ratio bucket): scale to cover
    it, crop the rest; also say whether the image was mirrored (the latent cache keeps both sides)."""
    rng = rng or np.random.default_rng()
    image = to_rgb(image)
    out_width, out_height = (size, size) if isinstance(size, int) else size
    width, height = image.size
    scale = max(out_width / width, out_height / height)
    if scale != 1.0:
        image = image.resize((max(out_width, round(width * scale)), max(out_height, round(height * scale))),
                             Image.BICUBIC)
    width, height = image.size
    if random_crop:
        left, top = int(rng.integers(width - out_width + 1)), int(rng.integers(height - out_height + 1))
    else:
        left, top = (width - out_width) // 2, (height - out_height) // 2
    image = image.crop((left, top, left + out_width, top + out_height))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    mirrored = bool(flip and rng.random() < 0.5)
    if mirrored:
        array = array[:, ::-1]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()), mirrored


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) tensors in [-1, 1] -> PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]

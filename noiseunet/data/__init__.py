"""Training data: image-caption sources, the built-in shapes data, and preprocessing."""

import os

from torch.utils.data import Dataset

from .captioned import METADATA_FILES, HFImageCaptions, ImageCaptionFolder
from .shapes import DEFAULT_MIXTURE, LATER_MIXTURE, LATER_MIXTURE_FROM, ShapesDataset


def open_source(
    data: str | None,
    resolution: int = 32,
    caption_column: str = "text",
    image_column: str = "image",
    seed: int = 0,
    option: str = "--data",
    mixture: dict[str, float] | None = None,
) -> Dataset:
    """``None``/"shapes" -> the built-in shapes data (its task families in ``mixture`` for the whole run, by
    default ``DEFAULT_MIXTURE``, then ``LATER_MIXTURE`` from image ``LATER_MIXTURE_FROM`` on); a folder with
    metadata -> ImageCaptionFolder; a ``save_to_disk`` folder or a hub name -> HFImageCaptions. Errors name
    ``option``, the argument that gave ``data``."""
    if data in (None, "shapes"):
        if mixture:
            return ShapesDataset(size=resolution, seed=seed, mixture=mixture)
        return ShapesDataset(size=resolution, seed=seed, mixture=DEFAULT_MIXTURE,
                             later=(LATER_MIXTURE_FROM, LATER_MIXTURE))
    if mixture:
        raise ValueError(f"--mixture sets the families of the built-in shapes data, not of {option} {data}")
    if os.path.isdir(data) and any(os.path.exists(os.path.join(data, name)) for name in METADATA_FILES):
        return ImageCaptionFolder(data, caption_column)
    if not os.path.exists(data) and (os.path.isabs(data) or data.startswith((".", "~"))):
        raise FileNotFoundError(f"{option} {data}: no such folder")
    saved_dataset_files = ("dataset_info.json", "state.json", "dataset_dict.json")
    if os.path.isdir(data) and not any(os.path.exists(os.path.join(data, name)) for name in saved_dataset_files):
        raise FileNotFoundError(f"{option} {data}: the folder has no {' or '.join(METADATA_FILES)} "
                                "and is not a saved datasets dataset")
    if os.path.exists(data) and not os.path.isdir(data):
        raise ValueError(f"{option} {data}: expected a folder, a saved dataset or a dataset name")
    return HFImageCaptions(data, image_column, caption_column)


__all__ = ["HFImageCaptions", "ImageCaptionFolder", "ShapesDataset", "open_source"]

"""Find bad samples before training starts, and say which file or row and why.

Scraped folders hold truncated JPEGs, files that are not images, rows pointing at missing files, empty
captions and thumbnails smaller than the training resolution. A data loader that meets one of them
mid-run crashes hours in with a stack trace; checking every sample first costs one decode per image
and turns each into a one-line answer.
"""

import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset

from .captioned import HFImageCaptions, ImageCaptionFolder
from .shapes import ShapesDataset


@dataclass(frozen=True)
class Problem:
    where: str  # file path, or "row N" of a dataset
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def caption_problem(caption) -> str | None:
    captions = caption if isinstance(caption, (list, tuple)) else [caption]
    if not captions:
        return "empty caption list"
    for text in captions:
        if not isinstance(text, str):
            return f"caption is not text ({type(text).__name__})"
        if not text.strip():
            return "empty caption"
    return None


def image_problem(image: Image.Image, resolution: int) -> str | None:
    if min(image.size) < resolution:
        return f"image is {image.size[0]}x{image.size[1]}, smaller than the resolution {resolution}"
    return None


def check_source(source: Dataset, resolution: int) -> tuple[range | list[int], list[Problem]]:
    """(indices of good samples, problems of the bad ones). The built-in shapes need no check."""
    if isinstance(source, ShapesDataset):
        return range(len(source)), []
    good, problems = [], []
    for index in range(len(source)):
        problem = _check_folder_row(source, index, resolution) if isinstance(source, ImageCaptionFolder) \
            else _check_dataset_row(source, index, resolution)
        if problem is None:
            good.append(index)
        else:
            problems.append(problem)
    return good, problems


def _check_folder_row(source: ImageCaptionFolder, index: int, resolution: int) -> Problem | None:
    row = source.rows[index]
    path = source.root / str(row["file_name"])
    where = f"{path} (row {index + 1})"
    message = caption_problem(row[source.caption_column])
    if message:
        return Problem(where, message)
    if not path.is_file():
        return Problem(where, "file not found")
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything: truncated files fail here, not in the training loop
            message = image_problem(image, resolution)
    except UnidentifiedImageError:
        return Problem(where, "not an image file")
    except (OSError, SyntaxError, ValueError) as error:
        return Problem(where, f"unreadable image ({error})")
    return Problem(where, message) if message else None


def _check_dataset_row(source: HFImageCaptions, index: int, resolution: int) -> Problem | None:
    where = f"row {index}"
    try:
        item = source[index]
    except (OSError, SyntaxError, ValueError) as error:
        return Problem(where, f"unreadable image ({error})")
    message = caption_problem(item["caption"])
    if message is None and not isinstance(item["image"], Image.Image):
        message = f"image column holds {type(item['image']).__name__}, not an image"
    if message is None:
        message = image_problem(item["image"], resolution)
    return Problem(where, message) if message else None


def usable_samples(source: Dataset, resolution: int, on_bad_sample: str = "skip") -> Dataset:
    """The source without its bad samples (with a warning naming the first few), or a ValueError naming
    the first one when ``on_bad_sample="error"``; an error too when nothing usable is left."""
    good, problems = check_source(source, resolution)
    if problems and on_bad_sample == "error":
        raise ValueError(f"{len(problems)} bad sample(s), first: {problems[0]} (--on-bad-sample skip to leave them out)")
    if not good:
        raise ValueError(f"no usable samples ({len(problems)} bad, first: {problems[0]})" if problems
                         else "the training data is empty")
    if problems:
        listed = "; ".join(str(p) for p in problems[:3])
        warnings.warn(f"skipping {len(problems)} bad sample(s) of {len(source)}: {listed}"
                      f"{' ...' if len(problems) > 3 else ''} (noiseunet check-data lists them all)", stacklevel=2)
        return Subset(source, good)
    return source

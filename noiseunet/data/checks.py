"""Find bad samples before training starts, and say which file or row and why.

Scraped folders hold truncated JPEGs, files that are not images, rows pointing at missing files, empty
captions and thumbnails smaller than the training resolution. A data loader that meets one of them
mid-run crashes hours in with a stack trace; checking every sample first costs one decode per image
and turns each into a one-line answer.
"""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image
from torch.utils.data import Dataset


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


def check_rows(count: int, problem_of: Callable[[int], Problem | None]) -> tuple[list[int], list[Problem]]:
    """(indices whose ``problem_of`` is None, the problems of the others), in order."""
    good, problems = [], []
    for index in range(count):
        problem = problem_of(index)
        if problem is None:
            good.append(index)
        else:
            problems.append(problem)
    return good, problems


def check_source(source: Dataset, resolution: int) -> tuple[Sequence[int], list[Problem]]:
    """(indices of good samples, problems of the bad ones), as the source itself judges them."""
    return source.check(resolution)


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
        return source.subset(good)
    return source

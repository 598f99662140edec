"""Image-caption sources: a folder with metadata, a saved ``datasets`` dataset, or a hub dataset name.

Every source is a map-style dataset of ``{"image": PIL.Image, "caption": str | list[str]}`` that also
answers for itself what the trainer asks besides its items: its captions (to train a tokenizer, read
without decoding images), its bad samples, and prompts for validation grids. So the trainer treats them
alike with no question about their type; the built-in ``shapes`` data (``shapes.py``) is one more.
"""

import csv
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset

from .checks import Problem, caption_problem, check_rows, image_problem

METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def flat_captions(captions: Iterable) -> list[str]:
    """Captions, some of them lists of alternatives, as one flat list of strings (anything else dropped)."""
    flat = itertools.chain.from_iterable(c if isinstance(c, (list, tuple)) else [c] for c in captions)
    return [c for c in flat if isinstance(c, str)]


def distinct_prompts(captions: Iterable, count: int) -> list[str]:
    """The first ``count`` distinct non-empty captions: validation prompts drawn from the data itself."""
    prompts = dict.fromkeys(c for c in flat_captions(captions) if c.strip())
    return list(prompts)[:count]


class CaptionedSource(Dataset):
    """A map-style image-caption source. Subclasses read their captions and check their samples."""

    def captions(self, indices: Sequence[int]) -> list:
        """The captions (strings or lists of them) of these items, without decoding their images."""
        raise NotImplementedError

    def problem(self, index: int, resolution: int) -> Problem | None:
        """What is wrong with item ``index`` for training at ``resolution``, or None."""
        raise NotImplementedError

    def check(self, resolution: int) -> tuple[Sequence[int], list[Problem]]:
        """(indices of good samples, problems of the bad ones)."""
        return check_rows(len(self), lambda index: self.problem(index, resolution))

    def validation_prompts(self, count: int = 4) -> list[str]:
        return distinct_prompts(self.captions(range(min(len(self), 1000))), count)

    def image_size(self, index: int) -> tuple[int, int]:
        """(width, height) of item ``index``'s image."""
        return self[index]["image"].size

    def subset(self, indices: Sequence[int]) -> "CheckedSubset":
        """Only these items (the good ones), still answering for themselves."""
        return CheckedSubset(self, indices)


class CheckedSubset(Subset, CaptionedSource):
    """The good samples of a checked source, answering for themselves as the source does."""

    def captions(self, indices: Sequence[int]) -> list:
        return self.dataset.captions([self.indices[i] for i in indices])

    def problem(self, index: int, resolution: int) -> Problem | None:
        return self.dataset.problem(self.indices[index], resolution)

    def image_size(self, index: int) -> tuple[int, int]:
        return self.dataset.image_size(self.indices[index])

    def validation_prompts(self, count: int = 4) -> list[str]:
        return self.dataset.validation_prompts(count)


class ImageCaptionFolder(CaptionedSource):
    """A folder of images with ``metadata.jsonl`` or ``metadata.csv``: ``file_name`` plus a caption column
    (the layout of the ``datasets`` "imagefolder" builder). A caption may be a list of captions."""

    def __init__(self, root: str | os.PathLike, caption_column: str = "text"):
        self.root = Path(root)
        self.rows = read_metadata(self.root, caption_column)
        self.caption_column = caption_column

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        path = self.root / row["file_name"]
        with Image.open(path) as image:
            image.load()
        return {"image": image, "caption": row[self.caption_column], "source": str(path)}

    def captions(self, indices: Sequence[int]) -> list:
        return [self.rows[i][self.caption_column] for i in indices]

    def image_size(self, index: int) -> tuple[int, int]:
        with Image.open(self.root / self.rows[index]["file_name"]) as image:  # the header only
            return image.size

    def problem(self, index: int, resolution: int) -> Problem | None:
        row = self.rows[index]
        path = self.root / str(row["file_name"])
        where = f"{path} (row {index + 1})"
        message = caption_problem(row[self.caption_column])
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


def read_metadata(root: Path, caption_column: str) -> list[dict]:
    """Rows of the folder's metadata file; errors name the file and the row."""
    for name in METADATA_FILES:
        path = root / name
        if path.exists():
            break
    else:
        raise FileNotFoundError(f"{root}: no {' or '.join(METADATA_FILES)} found")
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    else:
        with open(path, encoding="utf-8", newline="") as file:
            rows = list(csv.DictReader(file))
    for number, row in enumerate(rows, start=1):
        for column in ("file_name", caption_column):
            if not isinstance(row, dict) or column not in row:
                raise ValueError(f"{path}: row {number} has no {column!r} column")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


class HFImageCaptions(CaptionedSource):
    """A Hugging Face ``datasets`` dataset (saved with ``save_to_disk`` or named on the hub)."""

    def __init__(self, name_or_path: str, image_column: str = "image", caption_column: str = "text", split: str = "train"):
        import datasets

        if os.path.isdir(name_or_path):
            dataset = datasets.load_from_disk(name_or_path)
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name_or_path, split=split)
        for column in (image_column, caption_column):
            if column not in dataset.column_names:
                raise ValueError(f"{name_or_path}: no column {column!r} (columns: {', '.join(dataset.column_names)})")
        self.dataset, self.image_column, self.caption_column = dataset, image_column, caption_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[index]
        return {"image": row[self.image_column], "caption": row[self.caption_column], "source": f"row {index}"}

    def captions(self, indices: Sequence[int]) -> list:
        return self.dataset.select(indices)[self.caption_column]

    def problem(self, index: int, resolution: int) -> Problem | None:
        where = f"row {index}"
        try:
            item = self[index]
        except (OSError, SyntaxError, ValueError) as error:
            return Problem(where, f"unreadable image ({error})")
        message = caption_problem(item["caption"])
        if message is None and not isinstance(item["image"], Image.Image):
            message = f"image column holds {type(item['image']).__name__}, not an image"
        if message is None:
            message = image_problem(item["image"], resolution)
        return Problem(where, message) if message else None

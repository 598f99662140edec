"""Image-caption sources: a folder with metadata, a saved ``datasets`` dataset, or a hub dataset name.

Every source is a map-style dataset of ``{"image": PIL.Image, "caption": str | list[str]}`` so the
trainer treats them alike; the built-in ``shapes`` data (``shapes.py``) has the same shape.
"""

import csv
import json
import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

METADATA_FILES = ("metadata.jsonl", "metadata.csv")


class ImageCaptionFolder(Dataset):
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


class HFImageCaptions(Dataset):
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

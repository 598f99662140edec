"""The built-in shapes written out as an image folder: the ``metadata.jsonl`` layout ``--data`` reads.

Fine-tuning examples and tests need the built-in data as a user would bring their own: files on disk with
their captions (for instance the diamonds of the "new_word" split, which the endless dataset never draws).
"""

from pathlib import Path

from ..files import write_jsonl
from .shapes import ShapesDataset


def save_shapes_folder(root: str | Path, count: int, size: int = 32, seed: int = 0, split: str = "train") -> Path:
    """Items ``0 .. count - 1`` of ``ShapesDataset(size, seed, split)`` as PNGs plus ``metadata.jsonl``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data, rows = ShapesDataset(size=size, seed=seed, split=split), []
    for i in range(count):
        item = data[i]
        item["image"].save(root / f"{i:04d}.png")
        rows.append({"file_name": f"{i:04d}.png", "text": item["caption"]})
    write_jsonl(root / "metadata.jsonl", rows)
    return root

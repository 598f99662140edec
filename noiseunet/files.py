"""Files that are never half-written, and weights that are never unpickled by accident.

Every output (JSON reports, PNG grids, checkpoints) is written to a temporary name in the same folder and
renamed into place, so a kill or a full disk leaves either the old file or the new one, never a torn one.
Weights load from safetensors only: a folder with nothing but pickle files (``*.bin``, ``*.ckpt``) is
refused unless the caller passes ``allow_pickle=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def replacing_folder_entries(folder: str | os.PathLike, last: str | None = None) -> Iterator[Path]:
    """Yield an empty staging folder inside ``folder``; on success each entry written there replaces the
    entry of the same name in ``folder`` (``last`` moved last, e.g. the index that makes the folder
    loadable). An entry is never half-written: the old one is renamed aside before the new one moves in."""
    folder = Path(folder)
    staging = folder / ".staging"  # one writer per folder (the main process); a killed run's is cleared here
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        for entry in sorted(staging.iterdir(), key=lambda e: e.name == last):
            target, aside = folder / entry.name, folder / f".{entry.name}.old-{os.getpid()}"
            if target.exists():
                os.replace(target, aside)
            os.replace(entry, target)
            if aside.is_dir():
                shutil.rmtree(aside)
            else:
                aside.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    with replacing(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2))
    return Path(path)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> Path:
    """One JSON object per line (the metadata.jsonl of an image folder), written whole or not at all."""
    with replacing(path) as temporary:
        temporary.write_text("".join(json.dumps(record) + "\n" for record in records))
    return Path(path)


def save_image(image: Image.Image, path: str | os.PathLike) -> Path:
    with replacing(path) as temporary:
        image.save(temporary, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))
    return Path(path)


def has_subfolder(name_or_path: str | os.PathLike, subfolder: str) -> bool:
    """Whether a pipeline folder or hub repo holds ``subfolder/config.json`` (unet/, vae/, text_encoder/, ...)."""
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, subfolder, "config.json"))
    from huggingface_hub import file_exists

    return file_exists(str(name_or_path), f"{subfolder}/config.json")


def from_pretrained(cls, path: str | os.PathLike, allow_pickle: bool = False, **kwargs):
    """``cls.from_pretrained(path)`` from safetensors files only, with a one-line error naming ``path``
    when the folder holds only pickle weights. ``allow_pickle=True`` loads those too (diffusers and
    transformers then unpickle with ``weights_only``; trust the source anyway)."""
    try:
        return cls.from_pretrained(path, use_safetensors=None if allow_pickle else True, **kwargs)
    except (OSError, ValueError) as error:
        if not allow_pickle and _has_only_pickle_weights(Path(path)):
            raise ValueError(f"{path}: has pickle weights (.bin) and no .safetensors; pickle can run code, so it "
                             "is refused. Convert the weights to safetensors, or pass --allow-pickle if you trust "
                             "the source") from None
        mismatch = re.search(r"Cannot load (.*?) ?because (\S+) expected shape (.+?), but got (.+?)\. ", str(error))
        if mismatch:  # diffusers' message suggests ignore_mismatched_sizes, which would load garbage
            where, name, expected, found = mismatch.groups()
            raise ValueError(f"{where or path}: a config.json does not match its weights: {name} has shape {found} "
                             f"in the weights but {expected} by the config") from None
        raise


def _has_only_pickle_weights(folder: Path) -> bool:
    """Some subfolder (unet/, text_encoder/, ...) has pickle weights and no safetensors beside them."""
    if not folder.is_dir():
        return False
    pickled = {p.parent for p in folder.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")}
    return any(not any(parent.glob("*.safetensors")) for parent in pickled)

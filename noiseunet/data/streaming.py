"""Training on data larger than memory or disk: WebDataset tar shards or a hub dataset, streamed.

``datasets`` reads the stream (local ``.tar`` shards through its webdataset builder, a hub dataset with
``streaming=True``), shuffles the shard order every epoch, and splits it between processes
(``split_dataset_by_node``: whole shards per process when the shard count divides by the process count).
Nothing is read in advance, so bad samples are met as they stream by: each is skipped and counted, or
stops the run with ``on_bad_sample="error"``.

Examples are shuffled here, in blocks of ``shuffle_buffer`` rows, each block by a generator seeded by
(seed, rank, epoch, block). ``datasets``' own shuffle buffer cannot be saved (its examples are dropped on
resume); a block can be replayed: the state is the stream's position at the block's start plus the
offset within it, so a resumed run reads bitwise what the uninterrupted one read.
"""

from __future__ import annotations

import glob
import io
import os
import warnings

import datasets
import numpy as np
from datasets.distributed import split_dataset_by_node
from PIL import Image

from .captioned import distinct_prompts, flat_captions
from .checks import Problem, caption_problem, image_problem
from .loader import collate, training_example

IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image")
CAPTION_COLUMNS = ("txt", "caption", "text")
WARN_FIRST = 5  # bad samples named in warnings before they are only counted


def tar_shards(data: str | None) -> list[str] | None:
    """The sorted ``.tar`` shards ``data`` names (a folder holding them, one shard, or a glob), else None."""
    if data is None:
        return None
    if os.path.isdir(data):
        shards = glob.glob(os.path.join(data, "*.tar"))
        return sorted(shards) or None
    if data.endswith(".tar") or any(c in data for c in "*?["):
        shards = sorted(glob.glob(data))
        if not shards:
            raise FileNotFoundError(f"--data {data}: no .tar shards match")
        return shards
    return None


def open_stream(data: str | None, streaming: bool = False) -> datasets.IterableDataset | None:
    """A streamed dataset when ``data`` names tar shards, or ``streaming`` is asked for a hub name; else None."""
    shards = tar_shards(data)
    if shards is not None:
        return datasets.load_dataset("webdataset", data_files={"train": shards}, split="train", streaming=True)
    if streaming:
        if data in (None, "shapes"):
            raise ValueError("--streaming needs --data: tar shards or a hub dataset name")
        return datasets.load_dataset(data, split="train", streaming=True)
    return None


def _column(columns: list[str], wanted: str, fallbacks: tuple[str, ...], what: str, data: str) -> str:
    for name in (wanted, *fallbacks):
        if name in columns:
            return name
    raise ValueError(f"--data {data}: no {what} column {wanted!r} or {'/'.join(fallbacks)} "
                     f"(columns: {', '.join(columns)})")


class StreamedBatches:
    """Endless training batches of one process from a streamed dataset; a ``BatchSource``.

    Each example goes through the same ``training_example`` as the map-style sources, with its random
    choices seeded by (seed, rank, position in this process's stream).
    """

    def __init__(self, dataset: datasets.IterableDataset, data: str, batch_size: int, resolution: int, seed: int = 0,
                 rank: int = 0, world: int = 1, random_crop: bool = False, flip: bool = False,
                 caption_dropout: float = 0.1, image_column: str = "image", caption_column: str = "text",
                 on_bad_sample: str = "skip", shuffle_buffer: int = 1000):
        first = next(iter(dataset))
        self.image_column = _column(list(first), image_column, IMAGE_COLUMNS, "image", data)
        self.caption_column = _column(list(first), caption_column, CAPTION_COLUMNS, "caption", data)
        if isinstance(dataset.features, datasets.Features) and isinstance(
                dataset.features.get(self.image_column), datasets.Image):
            dataset = dataset.cast_column(self.image_column, datasets.Image(decode=False))  # we decode, to name bad files
        if shuffle_buffer > 1:
            # Shard order only: with a buffer of one, datasets yields every example at once and holds none,
            # so its state resumes exactly; the examples are shuffled in replayable blocks below.
            dataset = dataset.shuffle(seed=seed, buffer_size=1)
        self.dataset = split_dataset_by_node(dataset, rank, world)
        self.data, self.batch_size, self.resolution, self.seed, self.rank = data, batch_size, resolution, seed, rank
        self.random_crop, self.flip, self.caption_dropout = random_crop, flip, caption_dropout
        self.on_bad_sample, self.block_size = on_bad_sample, max(shuffle_buffer, 1)
        self.epoch, self.position, self.skipped = 0, 0, 0
        # The block being read: where the stream stood when it began (None: at the epoch's start), its index
        # in the epoch, its shuffled rows and how many of them were taken.
        self.block_start, self.block, self.offset = None, 0, 0
        self._rows, self._block_rows, self._next_block_start = None, None, None

    def __iter__(self) -> StreamedBatches:
        return self

    def __next__(self) -> dict:
        return collate([self._next_example() for _ in range(self.batch_size)])

    def _next_example(self) -> dict:
        first_epoch = self.epoch
        while True:
            row = self._next_row()
            if self.epoch - first_epoch > 1:  # a whole pass without a usable sample: give up
                raise ValueError(f"--data {self.data}: no usable sample in a whole pass over the stream of "
                                 f"process {self.rank} ({self.skipped} bad ones skipped)")
            self.position += 1
            example = self._example(row)
            if example is not None:
                return example

    def _next_row(self) -> dict:
        if self._block_rows is None:  # resumed: read the checkpoint's block again
            self._read_block(self.block_start)
        while self.offset >= len(self._block_rows):
            self.block_start, self.block, self.offset = self._next_block_start, self.block + 1, 0
            self._read_block(self.block_start)
        self.offset += 1
        return self._block_rows[self.offset - 1]

    def _read_block(self, start: dict | None) -> None:
        """Read the block that begins at stream state ``start`` and shuffle it; at the epoch's end, the
        next epoch's first block."""
        if self._rows is None or start is not self._next_block_start:
            self.dataset.set_epoch(self.epoch)
            if start is not None:
                self.dataset.load_state_dict(start)
            self._rows = iter(self.dataset)
        rows, fresh = [], start is None
        while len(rows) < self.block_size:
            try:
                rows.append(next(self._rows))
            except StopIteration:
                if rows:
                    break
                if fresh:  # a whole epoch without a row would loop forever
                    raise ValueError(f"--data {self.data}: the stream of process {self.rank} is empty") from None
                self.epoch, self.block, self.block_start, fresh = self.epoch + 1, 0, None, True
                self.dataset.set_epoch(self.epoch)
                self._rows = iter(self.dataset)
        self._next_block_start = self.dataset.state_dict()
        order = np.random.default_rng([self.seed, 3, self.rank, self.epoch, self.block]).permutation(len(rows))
        self._block_rows = [rows[i] for i in order]

    def _example(self, row: dict) -> dict | None:
        where = f"{row.get('__url__', self.data)}:{row.get('__key__', self.position)}"
        image, problem = _decode(row.get(self.image_column))
        caption = self.caption_of(row)
        problem = problem or caption_problem(caption) or image_problem(image, self.resolution)
        if problem is not None:
            self._bad(Problem(where, problem))
            return None
        rng_key = [self.seed, 2, self.rank, self.position]
        return training_example(image, caption, self.resolution, rng_key, self.random_crop, self.flip,
                                self.caption_dropout)

    def _bad(self, problem: Problem) -> None:
        if self.on_bad_sample == "error":
            raise ValueError(f"bad sample in the stream: {problem}")
        self.skipped += 1
        if self.skipped <= WARN_FIRST:
            warnings.warn(f"skipping bad sample {problem}" + (" (further ones are only counted)"
                                                              if self.skipped == WARN_FIRST else ""), stacklevel=2)

    def caption_of(self, row: dict):
        """A row's caption (a string or a list of them); WebDataset ``.txt`` members may arrive as bytes."""
        caption = row.get(self.caption_column)
        return caption.decode("utf-8", errors="replace") if isinstance(caption, bytes) else caption

    def captions(self, limit: int = 10_000) -> list[str]:
        """The captions of the first ``limit`` streamed rows (to train a tokenizer), images left undecoded."""
        return flat_captions(self.caption_of(row) for row in self.dataset.take(limit))

    def validation_prompts(self, count: int = 4) -> list[str]:
        return distinct_prompts((self.caption_of(row) for row in self.dataset.take(1000)), count)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped, "block": self.block,
                "block_start": self.block_start, "offset": self.offset}

    def finite_source(self) -> None:
        return None  # a stream is read once per epoch, never visited ahead

    def close(self) -> None:
        self._rows, self._block_rows = None, None

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state["skipped"]
        if "block" not in state:  # a checkpoint of an earlier version: continue after its last example
            state = {"block": 0, "block_start": state["dataset"], "offset": 0}
        self.block, self.block_start, self.offset = state["block"], state["block_start"], state["offset"]
        self._rows, self._block_rows = None, None


def _decode(value) -> tuple[Image.Image | None, str | None]:
    """A streamed image value (PIL image, {"bytes", "path"} or raw bytes) -> (image, problem)."""
    if isinstance(value, Image.Image):
        return value, None
    raw = value.get("bytes") or value.get("path") if isinstance(value, dict) else value
    if not isinstance(raw, (bytes, str)):
        return None, "no image bytes or path"
    try:
        image = Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else raw)
        image.load()
        return image, None
    except Exception as error:  # PIL raises many types for bad bytes; each becomes a named, skipped sample
        return None, f"unreadable image ({type(error).__name__}: {error})"

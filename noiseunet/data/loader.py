"""From a source of (image, caption) items to training batches in a resumable, shardable order.

Training reads *positions* 0, 1, 2, ... of an endless stream. Position p maps to a source item through
a per-epoch permutation, and every random choice for it (crop, flip, which caption, caption dropout)
comes from a generator seeded by (seed, p). So the stream is a pure function of the seed: resuming at
position p replays exactly, and N processes reading positions rank, rank + N, ... see disjoint data.
"""

import signal
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .grounding import object_regions, regions_as_trained
from .transforms import augment, mentions_left_or_right

ENDLESS = 10_000_000  # sources at least this long (the built-in shapes) are read in order, not shuffled


class StreamOrder:
    """Stream position -> source index: a fresh seeded permutation every epoch; endless sources in order."""

    def __init__(self, length: int, seed: int):
        if length == 0:
            raise ValueError("the training data is empty")
        self.length, self.seed = length, seed

    @lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.length)

    def __call__(self, position: int) -> int:
        if self.length >= ENDLESS:
            return position % self.length
        epoch, offset = divmod(position, self.length)
        return int(self._permutation(epoch)[offset])


class TrainingStream(Dataset):
    """Position -> {"pixel_values": (3, R, R) tensor in [-1, 1], "caption": str}; with ``regions``, also the
    words and pixels of each object the caption names (``grounding.Region``), which only the built-in data's
    items know (their ``spec``)."""

    def __init__(
        self, source: Dataset, resolution: int, seed: int = 0, random_crop: bool = False, flip: bool = True,
        caption_dropout: float = 0.1, regions: bool = False,
    ):
        self.source, self.resolution, self.seed, self.source_index = source, resolution, seed, StreamOrder(len(source), seed)
        self.random_crop, self.flip, self.caption_dropout, self.regions = random_crop, flip, caption_dropout, regions

    def __getitem__(self, position: int) -> dict:
        index = self.source_index(position)
        item = self.source[index]
        example = training_example(item["image"], item["caption"], self.resolution, [self.seed, 1, position],
                                   self.random_crop, self.flip, self.caption_dropout)
        if self.regions:
            if "spec" not in item or item["image"].size != (self.resolution, self.resolution):
                raise ValueError(f"item {index}: the grounding loss needs the built-in data's objects, rendered at "
                                 f"--resolution {self.resolution}")
            regions = object_regions(item["spec"], item["image"], item["mask"])
            example["regions"] = regions_as_trained(regions, example["caption"], example["mirrored"])
        return {**example, "index": index}


def training_example(image, caption: str | list[str], resolution: int | tuple[int, int], rng_key: list[int],
                     random_crop: bool, flip: bool, caption_dropout: float) -> dict:
    """One training pair: pick a caption (from a list), crop/flip/scale the image, maybe drop the caption.
    Every random choice comes from ``rng_key``, so the same key gives the same example."""
    rng = np.random.default_rng(rng_key)
    if isinstance(caption, (list, tuple)):
        caption = caption[int(rng.integers(len(caption)))]
    flip = flip and not mentions_left_or_right(caption)
    pixels, mirrored = augment(image, resolution, random_crop, flip, rng)
    if rng.random() < caption_dropout:
        caption = ""
    return {"pixel_values": pixels, "caption": caption, "mirrored": mirrored}


def collate(items: list[dict]) -> dict:
    """A batch: pixels, captions, whether each was mirrored and, for map-style data, each item's index (and
    the objects' regions, for the grounding loss)."""
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in items]),
             "captions": [item["caption"] for item in items], "mirrored": [item["mirrored"] for item in items]}
    if all("index" in item for item in items):
        batch["indices"] = [item["index"] for item in items]
    if "regions" in items[0]:
        batch["regions"] = [item["regions"] for item in items]
    return batch


def training_batches(
    stream: TrainingStream, batch_size: int, start: int = 0, rank: int = 0, world: int = 1, num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Endless batches of ``batch_size`` for process ``rank`` of ``world``, from stream position ``start``.

    Global batch g is positions [start + g*B*world, start + (g+1)*B*world); process r takes the r-th slice
    of B. So one process with batch 2B reads exactly what two processes with batch B read together, and
    the sequence does not depend on the number of loader workers (worker k makes batches k, k + W, ...,
    which the DataLoader interleaves back in order).
    """
    batches = BatchedPositions(stream, batch_size, start, rank, world)
    return DataLoader(batches, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=pin_memory, worker_init_fn=_leave_stop_signals_to_the_trainer)


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """Ctrl-C, `timeout` and Slurm signal the whole process group. A worker killed by one makes PyTorch
    raise in the training process before it can save; ignoring them here lets the trainer finish its
    step, save, and then shut the workers down itself."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)


class BatchedPositions(IterableDataset):
    """Whole batches of one process: batch b holds positions start + (b * world + rank) * B + i."""

    def __init__(self, stream: TrainingStream, batch_size: int, start: int, rank: int, world: int):
        self.stream, self.batch_size, self.start, self.rank, self.world = stream, batch_size, start, rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        batch = worker
        while True:
            first = self.start + (batch * self.world + self.rank) * self.batch_size
            yield collate([self.stream[first + i] for i in range(self.batch_size)])
            batch += workers

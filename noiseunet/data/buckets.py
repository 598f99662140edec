"""Aspect-ratio bucketing: non-square images keep their shape instead of being centre-cropped to a square.

Each image goes to the bucket (width, height) whose aspect ratio is nearest its own; every bucket has
about the pixel area of ``resolution``², in steps that the UNet (and a VAE) can halve down to its lowest
level. The image is scaled to cover its bucket and cropped only by what the two aspect ratios differ.
Every global batch holds images of one bucket, because a batch is one tensor (NovelAI's bucketing, as in
kohya's sd-scripts; requested of diffusers since #1112).

The batches are a pure function of (seed, epoch): each epoch shuffles the items, groups them by bucket
into global batches (a bucket's last batch is filled with its own first items of the epoch, so nothing
is dropped and no bucket mixes), and shuffles the batches. So resuming after N batches replays exactly.
"""

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .batches import SourceBatches
from .captioned import CaptionedSource
from .loader import collate, training_example

MAX_ASPECT = 2.0  # widest bucket, width / height (and its transpose)


def bucket_sizes(resolution: int, step: int, max_aspect: float = MAX_ASPECT) -> list[tuple[int, int]]:
    """(width, height) multiples of ``step`` with at most resolution² pixels, nearest that area, from the
    tallest to the widest allowed."""
    sizes = set()
    width = step
    while width <= resolution * max_aspect:
        height = (resolution * resolution // width) // step * step
        if height >= step and max(width / height, height / width) <= max_aspect:
            sizes.add((width, height))
        width += step
    return sorted(sizes, key=lambda size: size[0] / size[1])


def nearest_bucket(size: tuple[int, int], buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log ratio) an image of ``size`` (width, height)."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda bucket: abs(math.log(bucket[0] / bucket[1]) - aspect))


class BucketBatches(SourceBatches):
    """A ``BatchSource`` of a map-style source in aspect-ratio buckets; its state is the batches taken."""

    def __init__(self, source: CaptionedSource, batch_size: int, resolution: int, step: int, seed: int = 0,
                 rank: int = 0, world: int = 1, random_crop: bool = False, flip: bool = False,
                 caption_dropout: float = 0.1):
        self.source, self.batch_size, self.seed, self.rank, self.world = source, batch_size, seed, rank, world
        self.random_crop, self.flip, self.caption_dropout = random_crop, flip, caption_dropout
        self.buckets = bucket_sizes(resolution, step)
        self.item_size = [nearest_bucket(source.image_size(i), self.buckets) for i in range(len(source))]
        self.batches_per_epoch = len(self._epoch(0))
        self.taken = 0

    def __iter__(self) -> "BucketBatches":
        return self

    @lru_cache(maxsize=2)
    def _epoch(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches of item indices, each from one bucket."""
        rng = np.random.default_rng([self.seed, 4, epoch])
        order, size = rng.permutation(len(self.source)), self.batch_size * self.world
        batches = []
        for bucket in self.buckets:
            items = [int(i) for i in order if self.item_size[i] == bucket]
            if items:
                items += [items[k % len(items)] for k in range(-len(items) % size)]  # fill the last batch
                batches += [items[k:k + size] for k in range(0, len(items), size)]
        return [batches[k] for k in rng.permutation(len(batches))]

    def __next__(self) -> dict:
        epoch, number = divmod(self.taken, self.batches_per_epoch)
        first = self.rank * self.batch_size
        indices = self._epoch(epoch)[number][first:first + self.batch_size]
        examples = []
        for slot, index in enumerate(indices):
            item = self.source[index]
            example = training_example(item["image"], item["caption"], self.item_size[index],
                                       [self.seed, 5, epoch, number, first + slot], self.random_crop, self.flip,
                                       self.caption_dropout)
            examples.append({**example, "index": index})
        self.taken += 1
        return collate(examples)

    def load_state_dict(self, state: dict) -> None:
        self.taken = state["batches"]

    def image_size(self, index: int) -> tuple[int, int]:
        return self.item_size[index]

    def close(self) -> None:
        pass

"""One protocol for every kind of training data: what the trainer asks, and the map-style implementation.

The trainer draws batches with ``next``, saves and restores the position with ``state_dict`` /
``load_state_dict`` (stored per process in every checkpoint), trains a tokenizer on ``captions`` and
draws validation grids of ``validation_prompts``. Map-style sources (folders, ``datasets`` datasets,
the built-in shapes) and streams (``streaming.StreamedBatches``) both implement it, so no code asks
which kind it has.
"""

from typing import Protocol, runtime_checkable

from .captioned import CaptionedSource, flat_captions
from .loader import ENDLESS, TrainingStream, training_batches


@runtime_checkable
class BatchSource(Protocol):
    def __next__(self) -> dict:
        """{"pixel_values": (B, 3, R, R) in [-1, 1], "captions": B strings}."""

    def state_dict(self) -> dict:
        """JSON-serialisable position; ``load_state_dict`` of it continues exactly after the last batch."""

    def load_state_dict(self, state: dict) -> None: ...

    def captions(self, limit: int) -> list[str]:
        """Up to ``limit`` captions as flat strings, to train a tokenizer on."""

    def validation_prompts(self, count: int = 4) -> list[str]: ...

    def finite_source(self) -> CaptionedSource | None:
        """The items batches are drawn from, when they are few enough to visit all (to cache what frozen
        models compute from them; batches then carry ``indices`` into it and ``image_size(index)`` says the
        size each is trained at), else None."""

    def close(self) -> None:
        """Stop what reads ahead (loader workers), so that the process can exit."""


class SourceBatches:
    """What batches of a map-style source answer from the source itself."""

    source: CaptionedSource
    taken: int  # batches taken: the state

    def captions(self, limit: int) -> list[str]:
        return flat_captions(self.source.captions(range(min(limit, len(self.source)))))

    def validation_prompts(self, count: int = 4) -> list[str]:
        return self.source.validation_prompts(count)

    def finite_source(self) -> CaptionedSource | None:
        return self.source if len(self.source) < ENDLESS else None

    def state_dict(self) -> dict:
        return {"batches": self.taken}


class MapBatches(SourceBatches):
    """Batches of a map-style source: this process's slices of the seeded stream (``loader.py``), from the
    position after the last batch taken."""

    def __init__(self, source: CaptionedSource, batch_size: int, resolution: int, seed: int = 0, rank: int = 0,
                 world: int = 1, random_crop: bool = False, flip: bool = False, caption_dropout: float = 0.1,
                 num_workers: int = 0, pin_memory: bool = False, regions: bool = False):
        self.source, self.batch_size, self.resolution, self.rank, self.world = source, batch_size, resolution, rank, world
        self.stream = TrainingStream(source, resolution, seed, random_crop, flip, caption_dropout, regions)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.taken, self._loader = 0, None

    def __iter__(self) -> "MapBatches":
        return self

    def __next__(self) -> dict:
        if self._loader is None:  # started lazily, so that load_state_dict comes first
            start = self.taken * self.batch_size * self.world
            self._loader = iter(training_batches(self.stream, self.batch_size, start, self.rank, self.world,
                                                 self.num_workers, self.pin_memory))
        batch = next(self._loader)
        self.taken += 1
        return batch

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.taken = state["batches"]

    def image_size(self, index: int) -> tuple[int, int]:
        return self.resolution, self.resolution

    def close(self) -> None:
        """Shut down the loader's workers now: left to the garbage collector, persistent workers (which
        ignore stop signals, see ``loader.py``) keep the interpreter waiting for them at exit."""
        if self._loader is not None and hasattr(self._loader, "_shutdown_workers"):
            self._loader._shutdown_workers()
        self._loader = None

"""The user's images with prior images mixed in, so that fine-tuning on a few new images keeps what the model knew.

Fine-tuned on a few images of one new concept alone, a model drifts towards them and forgets the rest: in the
new-word benchmark (``scripts/finetune_benchmark.py``) the built-in prompts fell from 91% to 35-43% all-correct
in 3 minutes. DreamBooth's answer is prior preservation: train on images of what the model already draws beside
the new ones. The prior can be the data the base was trained on (replay; for the built-in shapes, ``shapes``)
or, when that is not at hand, images the base model itself generated (``noiseunet sample --out-dir`` writes
such a folder with its captions).

The mixture is one more map-style source, so caching, buckets, several processes and exact resume need
nothing new. A fixed, seeded set of prior items is drawn once, as DreamBooth's class images are: repeated when
the prior is smaller than its share asks, a random subset when it is larger (the built-in shapes are endless).
"""

from collections.abc import Sequence

import numpy as np

from .captioned import CaptionedSource, distinct_prompts
from .checks import Problem


class PriorMixture(CaptionedSource):
    """``data`` followed by prior items that make ``share`` of the whole (0 < share < 1)."""

    def __init__(self, data: CaptionedSource, prior: CaptionedSource, share: float, seed: int = 0) -> None:
        if not 0 < share < 1:
            raise ValueError(f"prior share (--prior-share) must be in (0, 1), got {share}")
        count = max(1, round(len(data) * share / (1 - share)))
        picks = np.random.default_rng([seed, 0x9819]).choice(len(prior), size=min(count, len(prior)), replace=False)
        self.data, self.prior, self.share = data, prior, share
        self.prior_indices = [int(picks[i % len(picks)]) for i in range(count)]

    def __len__(self) -> int:
        return len(self.data) + len(self.prior_indices)

    def _locate(self, index: int) -> tuple[CaptionedSource, int]:
        """(the source, its index) of mixture item ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        if index < len(self.data):
            return self.data, index
        return self.prior, self.prior_indices[index - len(self.data)]

    def __getitem__(self, index: int) -> dict:
        source, index = self._locate(index)
        return source[index]

    def captions(self, indices: Sequence[int]) -> list:
        ours = [i for i in indices if i < len(self.data)]
        prior = [self.prior_indices[i - len(self.data)] for i in indices if i >= len(self.data)]
        return (self.data.captions(ours) if ours else []) + (self.prior.captions(prior) if prior else [])

    def problem(self, index: int, resolution: int) -> Problem | None:
        source, index = self._locate(index)
        found = source.problem(index, resolution)
        if found is not None and source is self.prior:
            return Problem(f"prior {found.where}", found.message)
        return found

    def image_size(self, index: int) -> tuple[int, int]:
        source, index = self._locate(index)
        return source.image_size(index)

    def validation_prompts(self, count: int = 4) -> list[str]:
        """Mostly the new data's prompts (what the run is for), and one of the prior's (what it must keep)."""
        ours = self.data.validation_prompts(max(1, count - 1))
        return distinct_prompts(ours + self.prior.validation_prompts(count), count)

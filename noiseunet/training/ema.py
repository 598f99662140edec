"""The exponential moving average of the weights, with its warmup counted in images rather than steps."""

from collections.abc import Iterable

import torch
from diffusers.training_utils import EMAModel


class ImageCountedEMA(EMAModel):
    """diffusers' ``EMAModel`` whose warmup horizon counts images, so that a larger batch averages over the same
    images (and so over fewer of its larger steps) instead of over the same number of steps.

    diffusers' warmup decay ``1 - (1 + s)^-p`` averages over about ``(1 + s)^p`` steps after ``s`` steps. Here,
    with ``k = images_per_step / reference_batch``, the average spans ``(1 + k s)^p`` reference batches of
    images: each step gives the newest weights ``k (1 + k s)^-p``, and the cap ``decay`` (set for the reference
    batch) becomes ``1 - k (1 - decay)``. At ``k = 1`` this is diffusers' decay, step for step.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], images_per_step: int, reference_batch: int,
                 **kwargs) -> None:
        super().__init__(parameters, **kwargs)
        self.batch_ratio = images_per_step / reference_batch

    def get_decay(self, optimization_step: int) -> float:
        if not self.use_ema_warmup:
            return super().get_decay(optimization_step)
        step = max(0, optimization_step - self.update_after_step - 1)  # diffusers' count: 0 on the first update
        if step <= 0:
            return 0.0
        k = self.batch_ratio
        newest = min(1.0, k * (1 + k * step / self.inv_gamma) ** -self.power)
        cap = 1 - min(1.0, k * (1 - self.decay))
        return max(min(1 - newest, cap), self.min_decay)

"""The EMA's warmup counts images: diffusers' decay at the reference batch, the same images at any other."""

import pytest
import torch
from diffusers.training_utils import EMAModel

from noiseunet.training.ema import ImageCountedEMA


def emas(batch: int, power: float = 0.5, decay: float = 0.999):
    weights = [torch.nn.Parameter(torch.zeros(3))]
    return weights, ImageCountedEMA(weights, batch, 32, decay=decay, use_ema_warmup=True, power=power)


@pytest.mark.parametrize("power", [0.5, 0.75])
def test_at_the_reference_batch_it_is_diffusers_decay(power):
    reference = EMAModel([torch.nn.Parameter(torch.zeros(3))], decay=0.999, use_ema_warmup=True, power=power)
    _, ema = emas(32, power)
    assert [ema.get_decay(s) for s in range(5000)] == [reference.get_decay(s) for s in range(5000)]


def test_a_larger_batch_averages_over_the_same_images():
    """After the same images, the EMA of batch 512 spans as many images as that of batch 32: the weight of the
    newest weights per image, (1 - decay) / batch, is the same, up to the cap, which is also counted in images."""
    _, small = emas(32)
    _, large = emas(512)
    assert large.get_decay(3) == 0.0  # 2 steps of 512 images: a horizon (184 images) within one batch
    for large_step in (20, 100, 1000):
        small_step = large_step * 16
        per_image = [(1 - e.get_decay(s + 1)) / b for e, s, b in ((small, small_step, 32), (large, large_step, 512))]
        assert per_image[1] == pytest.approx(per_image[0], rel=1e-12)
    capped = 1 - large.get_decay(10**9)
    assert capped == pytest.approx(16 * (1 - 0.999))  # 1000 reference batches of images


def test_the_shadow_weights_follow_the_decay():
    weights, ema = emas(64)
    expected = torch.zeros(3)
    for step in range(1, 6):
        weights[0].data.fill_(float(step))
        ema.step(weights)
        decay = ema.get_decay(ema.optimization_step)
        expected = decay * expected + (1 - decay) * step
        assert torch.allclose(ema.shadow_params[0], expected)

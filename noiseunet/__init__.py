"""noiseunet: train and run text-conditioned diffusion UNets, drop-in compatible with diffusers."""

from .model import NoiseUNet

__all__ = ["NoiseUNet"]

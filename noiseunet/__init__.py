"""noiseunet: train and run text-conditioned diffusion UNets, drop-in compatible with diffusers."""

from .model import NoiseUNet
from .pipeline import NoiseUNetPipeline

__all__ = ["NoiseUNet", "NoiseUNetPipeline"]

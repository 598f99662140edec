"""The network: timestep embedding, residual block, attention, and the UNet that assembles them."""

from .unet import NoiseUNet

__all__ = ["NoiseUNet"]

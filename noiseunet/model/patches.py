"""PatchAutoencoder: an exact, weightless "VAE" that folds each p x p patch of pixels into one latent pixel.

A pixel-space UNet pays for its outermost level at full resolution, and on a CPU that level decides the
price of a step. Folding 2 x 2 patches into channels (pixel unshuffle: 32 x 32 x 3 -> 16 x 16 x 12, DiT's
patch size 2, "simple diffusion"'s downsampling without the wavelets) lets the UNet start at half the
resolution while it still predicts every pixel: the decoder unfolds the channels back, exactly. Unlike a
trained VAE it loses nothing and costs nothing, so the latents are the pixels, in [-1, 1].

It stands where diffusers pipelines expect an ``AutoencoderKL``: ``encode(x).latent_dist.sample()``,
``decode(z).sample``, ``config.scaling_factor`` and ``config.latent_channels``, and a ``block_out_channels``
with log2(p) + 1 entries, from which every pipeline reads its ``vae_scale_factor`` (2^(entries - 1) = p).
"""

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import (
    DecoderOutput,
    DiagonalGaussianDistribution,
)
from diffusers.models.modeling_utils import ModelMixin

__all__ = ["PatchAutoencoder", "latents_are_pixels"]


def latents_are_pixels(vae: torch.nn.Module | None) -> bool:
    """Whether a pipeline's latents are its pixels in [-1, 1] (no VAE, or patches of pixels), which samplers may
    then clip as DDPM's ``clip_sample`` does."""
    return vae is None or isinstance(vae, PatchAutoencoder)


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Pixels (B, C, H, W) in [-1, 1] <-> latents (B, C p^2, H / p, W / p), exactly (no weights)."""

    @register_to_config
    def __init__(self, patch_size: int = 2, in_channels: int = 3, scaling_factor: float = 1.0,
                 block_out_channels: list[int] | None = None, latent_channels: int | None = None):
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of 2 and at least 2, got {patch_size}")
        levels = int(math.log2(patch_size)) + 1
        channels = in_channels * patch_size**2
        if block_out_channels is not None and len(block_out_channels) != levels:
            raise ValueError(f"block_out_channels: patch_size {patch_size} needs {levels} entries, "
                             f"got {block_out_channels}")
        if latent_channels is not None and latent_channels != channels:
            raise ValueError(f"latent_channels: patch_size {patch_size} of {in_channels} channels gives {channels}, "
                             f"got {latent_channels}")
        # Read by pipelines only (their vae_scale_factor); nothing is built from them.
        self.register_to_config(block_out_channels=[channels] * levels, latent_channels=channels)
        # Not used: diffusers gives a model its dtype and device from its tensors, and loads a folder only
        # with a weights file in it, so a weightless model keeps one scalar.
        self.register_buffer("placeholder", torch.zeros(()))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        size = self.config.patch_size
        if x.shape[-1] % size or x.shape[-2] % size:
            raise ValueError(f"PatchAutoencoder.encode: {tuple(x.shape[-2:])} pixels are not a multiple of the "
                             f"patch size {size}")
        mean = F.pixel_unshuffle(x, size)
        # A point mass: the log-variance at the floor diffusers clamps to, and deterministic, so that
        # ``sample()`` and ``mode()`` both return the patches themselves.
        latent = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, -30.0)], 1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=latent) if return_dict else (latent,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **_) -> DecoderOutput | tuple:
        """``**_``: pipelines pass a ``generator`` that a deterministic decoder has no use for."""
        pixels = F.pixel_shuffle(z, self.config.patch_size)
        return DecoderOutput(sample=pixels) if return_dict else (pixels,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample

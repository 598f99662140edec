"""Timestep embedding: where the UNet learns *when* in the diffusion process it is.

The integer (or real) timestep t is turned into a fixed sinusoidal vector, as in the Transformer's
positional encoding (Vaswani et al. 2017, used for diffusion by Ho et al. 2020, DDPM), then an MLP
maps it to the width every residual block consumes.
"""

import math

import torch
from torch import nn


def sinusoidal_embedding(
    timesteps: torch.Tensor,
    dim: int,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) float32 features [sin | cos] (or [cos | sin] when flipped).

    Frequencies are max_period^(-i / (half - freq_shift)) for i < dim/2, exactly as diffusers'
    ``get_timestep_embedding`` computes them, so pretrained Stable Diffusion weights see the same input.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * frequencies[None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)
    embedding = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class SinusoidalEmbedding(nn.Module):
    """``sinusoidal_embedding`` as a module (no weights): diffusers' ``time_proj``/``add_time_proj``, which
    ControlNetModel.from_unet copies by name."""

    def __init__(self, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0):
        super().__init__()
        self.dim, self.flip_sin_to_cos, self.freq_shift = dim, flip_sin_to_cos, freq_shift

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(timesteps, self.dim, self.flip_sin_to_cos, self.freq_shift)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear (the MLP of DDPM's time embedding).

    ``cond_dim`` adds LCM's guidance-scale input (Luo et al. 2023, "Latent Consistency Models"): a distilled
    model takes the guidance scale w as a second, projected embedding added to the timestep features
    (``timestep_cond``), since it no longer runs classifier-free guidance itself.
    """

    def __init__(self, in_features: int, dim: int, cond_dim: int | None = None):
        super().__init__()
        self.cond_proj = nn.Linear(cond_dim, in_features, bias=False) if cond_dim else None
        self.linear_1 = nn.Linear(in_features, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, features: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is not None:
            if self.cond_proj is None:
                raise ValueError("timestep_cond was given but this model has no time_cond_proj_dim to take it")
            features = features + self.cond_proj(condition)
        return self.linear_2(self.act(self.linear_1(features)))

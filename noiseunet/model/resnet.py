"""Residual block and the resampling convolutions of the UNet's encoder and decoder."""

import torch
import torch.nn.functional as F
from torch import nn


class ResnetBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, + time embedding, GroupNorm, SiLU, dropout, 3x3 conv, + shortcut.

    The timestep enters as a per-channel bias after the first convolution (DDPM, Ho et al. 2020), so every
    block knows the noise level; ``time_dim=None`` builds the unconditioned block segmentation uses. With
    ``scale_shift`` (diffusers' ``resnet_time_scale_shift="scale_shift"``) it scales and shifts the second
    GroupNorm's output instead (AdaGN, Dhariwal & Nichol 2021): whatever the embedding carries (the noise
    level, class labels, pooled text) can then turn each block's channels up or down, not only offset them.
    A 1x1 convolution matches the shortcut's width when channels change.
    """

    def __init__(
        self, in_channels: int, out_channels: int, time_dim: int | None, groups: int = 32, eps: float = 1e-5,
        dropout: float = 0.0, scale_shift: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.scale_shift = scale_shift
        self.time_emb_proj = nn.Linear(time_dim, out_channels * (2 if scale_shift else 1)) if time_dim else None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is None:
            h = self.norm2(h)
        elif self.scale_shift:
            scale, shift = self.time_emb_proj(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + self.time_emb_proj(F.silu(time_emb))[:, :, None, None])
        h = self.conv2(self.dropout(F.silu(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: halves height and width (rounding up, so odd sizes work)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to an exact size, then a 3x3 convolution.

    The target is the size of the skip connection it will meet, not 2x the input: that is what makes
    inputs whose sides are not multiples of 2^levels come out at their own size.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class TransposedUpsample(nn.Module):
    """A learned 2x2 stride-2 transposed convolution (the original UNet's "up-convolution"), cropped or
    padded to the skip's exact size so odd sizes work too."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 2, stride=2)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(x)[..., : size[0], : size[1]]
        return F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]), mode="replicate")

"""The UNet's three kinds of block: an encoder level, the bottleneck, a decoder level.

A level is residual blocks at one resolution, each followed by a SpatialTransformer when the level attends
to the text, then a resampling convolution. Side models hook in here at diffusers' points: a T2I-Adapter's
residual enters a DownBlock (``residual``), FreeU reweights what an UpBlock concatenates (``freeu``).
"""

from typing import Callable

import torch
from diffusers.utils.torch_utils import apply_freeu
from torch import nn

from .attention import Conditioning
from .resnet import Downsample, ResnetBlock, Upsample

ResnetFactory = Callable[[int, int], ResnetBlock]
# (channels, index of the residual block in its level) -> the attention that follows that block.
AttentionFactory = Callable[[int, int], nn.Module]


class DownBlock(nn.Module):
    """One encoder level: residual blocks (each followed by a SpatialTransformer when the level attends),
    then a stride-2 downsampling. Every intermediate output is returned as a skip connection."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        make_resnet: ResnetFactory,
        make_attention: AttentionFactory | None = None,
        downsample: bool = True,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            make_resnet(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        self.attentions = None
        if make_attention is not None:
            self.attentions = nn.ModuleList(make_attention(out_channels, i) for i in range(num_layers))
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor | None,
        cond: Conditioning | None = None,
        residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``residual`` (a T2I-Adapter feature) is added where diffusers adds it: after the last attention of
        an attending level, else to the level's output (which is also its last skip)."""
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, cond)
                if residual is not None and i == len(self.resnets) - 1:
                    x = x + residual
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        if residual is not None and self.attentions is None:
            x = x + residual
            skips[-1] = x
        return x, skips


class MidBlock(nn.Module):
    """The bottleneck at the lowest resolution: residual block, SpatialTransformer, residual block."""

    def __init__(self, *, channels: int, make_resnet: ResnetFactory, make_attention: AttentionFactory):
        super().__init__()
        self.resnets = nn.ModuleList([make_resnet(channels, channels), make_resnet(channels, channels)])
        self.attentions = nn.ModuleList([make_attention(channels, 0)])

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x = self.resnets[0](x, emb)
        x = self.attentions[0](x, cond)
        return self.resnets[1](x, emb)


class UpBlock(nn.Module):
    """One decoder level: each residual block first concatenates the matching encoder skip (the UNet's
    defining connection, Ronneberger et al. 2015), then nearest upsampling + conv to the next skip's size.

    ``freeu`` (set by NoiseUNet.enable_freeu) holds FreeU's factors (Si et al. 2023, "FreeU: Free Lunch in
    Diffusion U-Net"): the two deepest decoder levels amplify half their backbone channels and damp the
    low frequencies of the skips, a sampling-time tweak with no weights.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        skip_channels: list[int],
        make_resnet: ResnetFactory,
        make_attention: AttentionFactory | None = None,
        upsample: bool = True,
        make_upsample: Callable[[int], nn.Module] = Upsample,
        level: int = 0,
    ):
        super().__init__()
        channels = [in_channels] + [out_channels] * (len(skip_channels) - 1)
        self.resnets = nn.ModuleList(make_resnet(c + s, out_channels) for c, s in zip(channels, skip_channels))
        self.attentions = None
        if make_attention is not None:
            self.attentions = nn.ModuleList(make_attention(out_channels, i) for i in range(len(skip_channels)))
        self.upsamplers = nn.ModuleList([make_upsample(out_channels)]) if upsample else None
        self.level = level  # 0 = deepest decoder level; FreeU acts on levels 0 and 1
        self.freeu: dict[str, float] | None = None

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor | None,
        skips: list[torch.Tensor],
        cond: Conditioning | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """``skips`` are consumed from the end (deepest first); ``size`` is where to upsample to."""
        for i, (resnet, skip) in enumerate(zip(self.resnets, reversed(skips))):
            if self.freeu is not None:
                x, skip = apply_freeu(self.level, x, skip, **self.freeu)
            x = resnet(torch.cat([x, skip], dim=1), emb)
            if self.attentions is not None:
                x = self.attentions[i](x, cond)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size)
        return x

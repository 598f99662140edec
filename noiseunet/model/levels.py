"""Assembling a UNet's levels: encoder blocks going down, decoder blocks coming back up, and the skip
connections between them.

NoiseUNet and SegmentationUNet share this one helper. What differs between them (time embedding or none,
attention or none, how to upsample) comes in as factories; the bookkeeping that is easy to get wrong, the
width of every skip the decoder concatenates, lives here once.
"""

from collections.abc import Sequence
from typing import Callable

from torch import nn

from .blocks import AttentionFactory, DownBlock, ResnetFactory, UpBlock
from .resnet import Upsample


def build_levels(
    *,
    in_channels: int,
    widths: Sequence[int],
    layers: Sequence[int],
    make_resnet: ResnetFactory,
    down_attention: Sequence[AttentionFactory | None] | None = None,
    up_attention: Sequence[AttentionFactory | None] | None = None,
    make_upsample: Callable[[int], nn.Module] = Upsample,
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Encoder and decoder blocks for levels of the given ``widths`` (top to bottom).

    Args:
        in_channels: width of the input to the first level (conv_in's output), also the first skip.
        widths, layers: per level, top to bottom: channels and residual blocks of the encoder level (its
            decoder mirror has one more, for the extra skip).
        make_resnet: (in_channels, out_channels) -> residual block.
        down_attention: per level, top to bottom, the attention factory of an attending level or None.
        up_attention: per decoder level, bottom to top (decoder order), the same.
        make_upsample: channels -> the decoder's upsampling module.

    Returns:
        (down_blocks, up_blocks); the decoder ends at widths[0] channels, the bottleneck sits at widths[-1].
    """
    levels = len(widths)
    down_attention = down_attention or [None] * levels
    up_attention = up_attention or [None] * levels
    if not len(layers) == len(down_attention) == len(up_attention) == levels:
        raise ValueError(f"build_levels needs one entry per level ({levels}) in layers and the attention lists")

    skip_channels = [in_channels]  # width of every tensor the decoder will concatenate, in encoder order
    down_blocks, channels = nn.ModuleList(), in_channels
    for level, width in enumerate(widths):
        last = level == levels - 1
        down_blocks.append(DownBlock(
            in_channels=channels, out_channels=width, num_layers=layers[level], make_resnet=make_resnet,
            make_attention=down_attention[level], downsample=not last,
        ))
        skip_channels += [width] * (layers[level] + (0 if last else 1))
        channels = width

    # Decoder, mirrored: decoder level i meets encoder level L-1-i through its skips.
    up_blocks = nn.ModuleList()
    for i, width in enumerate(reversed(widths)):
        skips = [skip_channels.pop() for _ in range(layers[levels - 1 - i] + 1)]
        up_blocks.append(UpBlock(
            in_channels=channels, out_channels=width, skip_channels=skips, make_resnet=make_resnet,
            make_attention=up_attention[i], upsample=i < levels - 1, make_upsample=make_upsample, level=i,
        ))
        channels = width
    return down_blocks, up_blocks

"""SegmentationUNet: NoiseUNet's encoder, decoder and skip connections classifying every pixel.

The UNet began as a segmentation network (Ronneberger et al. 2015). Here it is built from the very
blocks of NoiseUNet (DownBlock, UpBlock, ResnetBlock), without timestep or text conditioning, ending
in a 1x1 convolution to C class logits. The original valid-convolution UNet returned a smaller map than
its input; padded convolutions and upsampling to each skip's exact size keep H x W for any input size.
"""

from functools import partial

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..model.resnet import ResnetBlock, TransposedUpsample, Upsample
from ..model.unet import DownBlock, UpBlock

UPSAMPLING = {"nearest": Upsample, "transposed": TransposedUpsample}


class SegmentationUNet(ModelMixin, ConfigMixin):
    """(B, in_channels, H, W) image -> (B, num_classes, H, W) logits.

    Args:
        num_classes: classes per pixel (1 = binary with a sigmoid, else softmax over C).
        block_out_channels: width per resolution level.
        layers_per_block: residual blocks per encoder level.
        upsampling: "nearest" (nearest neighbour + 3x3 conv, no checkerboard artefacts) or "transposed"
            (learned 2x2 transposed convolution, as in the original UNet).
    """

    @register_to_config
    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        upsampling: str = "nearest",
        norm_num_groups: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
        make_resnet = partial(ResnetBlock, time_dim=None, groups=norm_num_groups, dropout=dropout)
        levels = len(block_out_channels)

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        skip_channels, channels = [block_out_channels[0]], block_out_channels[0]
        self.down_blocks = nn.ModuleList()
        for level, width in enumerate(block_out_channels):
            last = level == levels - 1
            self.down_blocks.append(DownBlock(channels, width, layers_per_block, make_resnet, None, 0, 0, downsample=not last))
            skip_channels += [width] * (layers_per_block + (0 if last else 1))
            channels = width
        self.mid_block = nn.ModuleList([make_resnet(channels, channels), make_resnet(channels, channels)])
        self.up_blocks = nn.ModuleList()
        for level, width in enumerate(reversed(block_out_channels)):
            skips = [skip_channels.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(UpBlock(channels, width, skips, make_resnet, None, 0, 0, upsample=level < levels - 1,
                                          make_upsample=UPSAMPLING[upsampling]))
            channels = width
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(images)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, None, None, None, None)
            skips += block_skips
        for resnet in self.mid_block:
            x = resnet(x, None)
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            x = block(x, None, block_skips, None, None, None, skips[-1].shape[-2:] if skips else None)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class indices."""
        logits = self(images)
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)

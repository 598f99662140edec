"""SegmentationUNet: NoiseUNet's encoder, decoder and skip connections classifying every pixel.

The UNet began as a segmentation network (Ronneberger et al. 2015). Here it is built from the very
blocks of NoiseUNet (DownBlock, UpBlock, ResnetBlock, assembled by the same ``build_levels``), without
timestep or text conditioning, ending
in a 1x1 convolution to C class logits. The original valid-convolution UNet returned a smaller map than
its input; padded convolutions and upsampling to each skip's exact size keep H x W for any input size.
"""

from functools import partial

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..model.levels import build_levels
from ..model.resnet import ResnetBlock, TransposedUpsample, Upsample

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
        top, bottom = block_out_channels[0], block_out_channels[-1]

        self.conv_in = nn.Conv2d(in_channels, top, 3, padding=1)
        self.down_blocks, self.up_blocks = build_levels(
            in_channels=top, widths=block_out_channels,
            layers=[layers_per_block] * len(block_out_channels), make_resnet=make_resnet,
            make_upsample=UPSAMPLING[upsampling],
        )
        self.mid_block = nn.ModuleList([make_resnet(bottom, bottom), make_resnet(bottom, bottom)])
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, top)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(top, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(images)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, None)
            skips += block_skips
        for resnet in self.mid_block:
            x = resnet(x, None)
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            x = block(x, None, block_skips, size=skips[-1].shape[-2:] if skips else None)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class indices."""
        logits = self(images)
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)

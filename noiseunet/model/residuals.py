"""Residuals from side networks that steer a frozen UNet through its encoder: ControlNet and T2I-Adapter.

ControlNet (Zhang et al. 2023) runs a trainable copy of the encoder on the control image and adds one
residual to every skip connection and one to the bottleneck's output. A T2I-Adapter (Mou et al. 2023) is
lighter: one feature per encoder level, added inside the level (``DownBlock``'s ``residual``), and one
to the bottleneck when a feature is left over at its shape. The injection points are diffusers', so the
residuals its ControlNetModel and T2IAdapter compute mean the same here.
"""

from collections.abc import Sequence

import torch


class SideResiduals:
    """The residuals of one forward call, handed out in the order the UNet reaches their injection points."""

    def __init__(
        self,
        controlnet_down: Sequence[torch.Tensor] | None = None,
        controlnet_mid: torch.Tensor | None = None,
        adapter: Sequence[torch.Tensor] | None = None,
    ):
        if controlnet_down is not None and controlnet_mid is None and adapter is None:
            # diffusers' deprecated T2I-Adapter form: encoder residuals without a middle one.
            controlnet_down, adapter = None, controlnet_down
        if (controlnet_down is None) != (controlnet_mid is None):
            raise ValueError("ControlNet residuals need both down_block_additional_residuals and "
                             "mid_block_additional_residual")
        self.controlnet_down = controlnet_down
        self.controlnet_mid = controlnet_mid
        self.adapter = list(adapter) if adapter is not None else []

    def next_adapter_residual(self) -> torch.Tensor | None:
        """The T2I-Adapter feature for the next encoder level, None when there is none left."""
        return self.adapter.pop(0) if self.adapter else None

    def add_to_skips(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """ControlNet: one residual per skip connection (conv_in's output included)."""
        if self.controlnet_down is None:
            return skips
        if len(self.controlnet_down) != len(skips):
            raise ValueError(f"down_block_additional_residuals has {len(self.controlnet_down)} tensors, "
                             f"the UNet has {len(skips)} skip connections")
        return [skip + residual for skip, residual in zip(skips, self.controlnet_down)]

    def add_to_middle(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck's output: a leftover adapter feature of its shape, then ControlNet's residual."""
        if self.adapter and self.adapter[0].shape == x.shape:
            x = x + self.adapter.pop(0)
        if self.adapter:
            raise ValueError(f"{len(self.adapter)} down_intrablock_additional_residuals were left over: the "
                             f"model has fewer levels than the adapter")
        return x if self.controlnet_mid is None else x + self.controlnet_mid

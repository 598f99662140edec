"""Cross-attention maps: what each image token pays each text token, recorded for a loss on them.

The grounding loss (``training/grounding.py``) needs the probabilities that the UNet's cross-attention
layers compute and then throw away. ``CrossAttentionMaps`` installs, on every cross-attention layer, a
processor that computes them explicitly (softmax of the scores, then the weighted values: the same numbers
as NoiseUNet's processor) and, while recording, keeps their mean over heads. Outside ``recording()`` the
processor is NoiseUNet's own, so validation and sampling pay nothing.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .attention import Attention, NoiseUNetAttnProcessor


class RecordingAttnProcessor(NoiseUNetAttnProcessor):
    """NoiseUNet's processor that, while its ``maps`` list is set, appends the (B, queries, keys) attention
    probabilities averaged over heads."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] | None = None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.maps is None:
            return super().attend(q, k, v, bias)
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        if bias is not None:
            scores = scores + bias
        probabilities = scores.float().softmax(dim=-1)
        self.maps.append(probabilities.mean(dim=1))
        return probabilities.to(v.dtype) @ v


class CrossAttentionMaps:
    """The cross-attention maps of ``unet``'s text attention layers (``attn2``), recorded on request."""

    def __init__(self, unet: nn.Module) -> None:
        self.processors = []
        for name, module in unet.named_modules():
            if isinstance(module, Attention) and name.endswith("attn2"):
                module.set_processor(RecordingAttnProcessor())
                self.processors.append(module.processor)
        if not self.processors:
            raise ValueError("the UNet has no cross-attention layers (attn2) to ground the prompt's words in")

    @contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """A list that fills, during the block, with each cross-attention layer's (B, H*W, tokens) map."""
        maps: list[torch.Tensor] = []
        for processor in self.processors:
            processor.maps = maps
        try:
            yield maps
        finally:
            for processor in self.processors:
                processor.maps = None

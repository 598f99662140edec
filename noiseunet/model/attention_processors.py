"""diffusers' attention-processor API for NoiseUNet: what pipelines and loaders call to swap attention.

Every NoiseUNet attention layer is a diffusers ``Attention`` module (attention.py), so the model-level
methods are diffusers' own: ``attn_processors``/``set_attn_processor`` come from its AttentionMixin, and
attention slicing and QKV fusion are UNet2DConditionModel's methods, which only walk Attention modules.
What NoiseUNet adds is the meaning of "default": its own fast processor.
"""

import inspect
from typing import Any

from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import CROSS_ATTENTION_PROCESSORS

from .attention import NoiseUNetAttnProcessor

# Keys diffusers' Attention drops without a warning when a processor does not take them.
QUIET_PROCESSOR_KWARGS = {"ip_adapter_masks", "ip_hidden_states"}


class AttentionProcessorsMixin:
    """Attention slicing, QKV fusion and the default processor, as UNet2DConditionModel offers them."""

    set_attention_slice = UNet2DConditionModel.set_attention_slice
    fuse_qkv_projections = UNet2DConditionModel.fuse_qkv_projections
    unfuse_qkv_projections = UNet2DConditionModel.unfuse_qkv_projections

    def set_default_attn_processor(self) -> None:
        """Back to NoiseUNet's own processor everywhere (diffusers' UNet sets its classic AttnProcessor, the
        same numbers). Refused, as diffusers refuses it, over processors outside diffusers' plain
        cross-attention family (Custom Diffusion's, added-KV ones, ...)."""
        allowed = CROSS_ATTENTION_PROCESSORS + (NoiseUNetAttnProcessor,)
        for name, processor in self.attn_processors.items():
            if type(processor) not in allowed:
                raise ValueError(f"Cannot call `set_default_attn_processor` when attention processors are of type "
                                 f"{type(processor).__name__} ({name})")
        self.set_attn_processor(NoiseUNetAttnProcessor())

    def check_attention_kwargs(self, attention_kwargs: dict[str, Any]) -> None:
        """Refuse cross_attention_kwargs that no attention processor of the model takes."""
        accepted = set(QUIET_PROCESSOR_KWARGS)
        for processor in {type(p): p for p in self.attn_processors.values()}.values():
            accepted |= set(inspect.signature(processor.__call__).parameters)
        unused = sorted(set(attention_kwargs) - accepted)
        if unused:
            raise ValueError(f"cross_attention_kwargs {unused} are not taken by any attention processor of this model")

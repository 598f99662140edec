"""Conversion to and from diffusers' ``UNet2DConditionModel``.

NoiseUNet stores its weights under diffusers' names and reads diffusers' config keys, so converting is
building the other class from the same config and loading the state dict strictly: every parameter
must map and none may be left over. What needs care is refusing the configs of UNet variants this
architecture does not implement (SDXL's added embeddings, class conditioning, ...) instead of quietly
building a different network.
"""

from typing import Any, Mapping

import torch
from diffusers import UNet2DConditionModel

# diffusers config keys that change the architecture, with the value the SD 1.x/2.x family uses.
SD_FAMILY_SETTINGS: dict[str, Any] = {
    "center_input_sample": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "num_attention_heads": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "mid_block_scale_factor": 1,
    "mid_block_only_cross_attention": None,
    "downsample_padding": 1,
    "act_fn": "silu",
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "cross_attention_norm": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "reverse_transformer_layers_per_block": None,
}


def check_supported_config(config: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the first config key whose value NoiseUNet cannot build."""
    for key, expected in SD_FAMILY_SETTINGS.items():
        value = config.get(key, expected)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(v != expected for v in values):
            raise ValueError(
                f"NoiseUNet implements the Stable Diffusion 1.x/2.x UNet; config {key}={value!r} is not supported "
                f"(expected {expected!r})"
            )
    for key in ("layers_per_block", "cross_attention_dim"):
        value = config.get(key)
        if isinstance(value, (list, tuple)) and len(set(value)) > 1:
            raise ValueError(f"NoiseUNet needs one {key} for all levels, got {value!r}")


def _single(value: Any) -> Any:
    """diffusers allows per-level lists where every SD config has one value; take that value."""
    return value[0] if isinstance(value, (list, tuple)) else value


def noiseunet_from_diffusers(cls, unet: UNet2DConditionModel):
    config = dict(unet.config)
    for key in ("layers_per_block", "cross_attention_dim"):
        config[key] = _single(config[key])
    model = cls.from_config(config)
    model.load_state_dict(unet.state_dict(), strict=True)
    return _like(model, unet)


def diffusers_from_noiseunet(model) -> UNet2DConditionModel:
    config = {key: value for key, value in model.config.items() if not key.startswith("_")}
    unet = UNet2DConditionModel(**config)
    unet.load_state_dict(model.state_dict(), strict=True)
    return _like(unet, model)


def _like(model: torch.nn.Module, reference: torch.nn.Module) -> torch.nn.Module:
    """Move ``model`` to the reference's device and dtype (casting only when they differ)."""
    model = model.to(reference.device)
    return model if model.dtype == reference.dtype else model.to(reference.dtype)


@torch.no_grad()
def max_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the error measure of the equivalence tests and the bench."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()

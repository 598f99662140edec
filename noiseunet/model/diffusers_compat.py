"""Conversion to and from diffusers' ``UNet2DConditionModel``.

NoiseUNet stores its weights under diffusers' names and reads diffusers' config keys, so converting is
building the other class from the same config and loading the state dict strictly: every parameter
must map and none may be left over. What needs care is refusing the configs of UNet variants this
architecture does not implement (GLIGEN, dual cross-attention, ...) instead of quietly building a
different network, and building a diffusers config with diffusers' defaults, not NoiseUNet's.
"""

import inspect
from typing import Any, Mapping

import torch
from diffusers import UNet2DConditionModel

# diffusers config keys of UNet variants NoiseUNet does not build, with the only value it accepts (the
# Stable Diffusion 1.x/2.x/XL value). NoiseUNet records them in its config, so pipelines and
# ControlNetModel.from_unet read what the network is, and refuses configs that set anything else.
FIXED_DIFFUSERS_SETTINGS: dict[str, Any] = {
    "center_input_sample": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "num_attention_heads": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "mid_block_scale_factor": 1,
    "mid_block_only_cross_attention": None,
    "downsample_padding": 1,
    "act_fn": "silu",
    "dual_cross_attention": False,
    "cross_attention_norm": None,
    "attention_type": "default",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
# Values that mean the same as the one above.
EQUIVALENT = {("mid_block_only_cross_attention", False)}


def check_supported_config(config: Mapping[str, Any]) -> None:
    """Raise a one-line ValueError naming the first config key whose value NoiseUNet cannot build."""
    for key, expected in FIXED_DIFFUSERS_SETTINGS.items():
        value = config.get(key, expected)
        if value != expected and (key, value) not in EQUIVALENT:
            raise ValueError(f"NoiseUNet does not build {key}={value!r} (it builds {key}={expected!r})")


def diffusers_defaults() -> dict[str, Any]:
    """UNet2DConditionModel's own defaults, which a config records in ``_use_default_values``."""
    parameters = inspect.signature(UNet2DConditionModel.__init__).parameters
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def prepare_config(config: Mapping[str, Any], init_keys: set[str]) -> dict[str, Any]:
    """A config dict NoiseUNet.from_config builds the right network from.

    Refuses the variants NoiseUNet does not build. A diffusers UNet config (``_class_name``
    UNet2DConditionModel, or no class name but diffusers-only keys) gets diffusers' defaults, not NoiseUNet's,
    for the keys it leaves out or lists in ``_use_default_values``: those are what built the diffusers network.
    """
    check_supported_config(config)
    config = dict(config)
    source = config.get("_class_name")
    if source is None and any(key in config for key in FIXED_DIFFUSERS_SETTINGS):
        source = UNet2DConditionModel.__name__
    if source == UNet2DConditionModel.__name__:
        defaults = diffusers_defaults()
        used_defaults = set(config.pop("_use_default_values", []))
        for key in init_keys:
            if key in defaults and (key not in config or key in used_defaults):
                config[key] = defaults[key]
        config["_use_default_values"] = sorted(used_defaults - init_keys)
    return {key: value for key, value in config.items() if key not in FIXED_DIFFUSERS_SETTINGS}


def noiseunet_from_diffusers(cls, unet: UNet2DConditionModel):
    with torch.device("meta"):  # no random initialisation of weights that are replaced at once
        model = cls.from_config(unet.config)
    weights = {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}
    model.load_state_dict(weights, strict=True, assign=True)
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

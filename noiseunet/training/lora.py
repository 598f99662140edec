"""LoRA (Hu et al. 2021) for fine-tuning: PEFT adapters on a frozen UNet, saved in the formats people load.

diffusers' ``load_lora_weights`` reads ``pytorch_lora_weights.safetensors`` as diffusers' own LoRA script
writes it. A1111, ComfyUI and kohya's sd-scripts read kohya's format: for SD 1.x/2.x, the same diffusers
module paths with ``_`` for ``.``, ``lora_down``/``lora_up`` and a per-module ``alpha`` (kohya trains SD 1.x
on the diffusers UNet). Files other tools could not load were a recurring complaint (diffusers #6252,
#10860, #6894); both formats are tested by loading them back through diffusers.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..files import replacing_folder_entries
from .config import LORA_TARGETS, TEXT_LORA_TARGETS, TrainConfig

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"
KOHYA_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_"}


def add_lora(unet: nn.Module, config: TrainConfig, text_encoder: nn.Module | None = None) -> None:
    """Freeze the UNet (and ``text_encoder``) and give them PEFT LoRA adapters: A Gaussian, B zero, so training
    starts exactly at the base."""
    from peft import LoraConfig

    settings = dict(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank, init_lora_weights="gaussian")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(**settings, target_modules=list(config.lora_targets or LORA_TARGETS)))
    if text_encoder is not None:
        # peft's own injection, as diffusers' loader does: transformers' add_adapter wants a newer peft.
        from peft import inject_adapter_in_model

        text_encoder.requires_grad_(False)
        text_lora = LoraConfig(**settings, target_modules=list(TEXT_LORA_TARGETS))
        inject_adapter_in_model(text_lora, text_encoder)
        text_encoder.lora_config = text_lora


def save_lora(unet: nn.Module, output: Path, text_encoder: nn.Module | None = None, kohya: bool = False) -> Path:
    """OUTPUT/pytorch_lora_weights.safetensors (the UNet's adapters and ``text_encoder``'s, with their rank and
    alpha in the file's metadata) and, with ``kohya``, OUTPUT/lora_kohya.safetensors."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    parts = {"unet": unet, "text_encoder": text_encoder} if text_encoder is not None else {"unet": unet}
    states = {name: get_peft_model_state_dict(model) for name, model in parts.items()}
    settings = {name: getattr(model, "lora_config", None) or model.peft_config["default"]
                for name, model in parts.items()}
    layers = {f"{name}_lora_layers": convert_state_dict_to_diffusers(state) for name, state in states.items()}
    metadata = {f"{name}_lora_adapter_metadata": config.to_dict() for name, config in settings.items()}
    with replacing_folder_entries(output) as staging:
        StableDiffusionPipeline.save_lora_weights(staging, safe_serialization=True, **layers, **metadata)
        if kohya:
            unet_settings = settings["unet"]
            converted = {}
            for name, state in states.items():
                converted.update(kohya_state_dict(state, settings[name].lora_alpha, KOHYA_PREFIXES[name]))
            save_file(converted, staging / KOHYA_FILE,
                      metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(unet_settings.r),
                                "ss_network_alpha": str(unet_settings.lora_alpha), "ss_base_model_version": "sd_v1"})
    return output / DIFFUSERS_FILE


def kohya_state_dict(peft_state: dict[str, torch.Tensor], alpha: float, prefix: str = "lora_unet_"
                     ) -> dict[str, torch.Tensor]:
    """PEFT keys (``down_blocks.0....to_q.lora_A.weight``) -> kohya's (``lora_unet_down_blocks_0_..._to_q.lora_down.weight``,
    ``.lora_up.weight`` and ``.alpha``); the text encoder's start with ``lora_te_``."""
    converted = {}
    for key, value in peft_state.items():
        module, kind = key.rsplit(".lora_", 1)  # kind: "A.weight" or "B.weight"
        name = prefix + module.replace(".", "_")
        converted[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.contiguous()
        converted[f"{name}.alpha"] = torch.tensor(float(alpha))
    return converted

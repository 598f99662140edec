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
from .config import LORA_TARGETS, TrainConfig

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"


def add_lora(unet: nn.Module, config: TrainConfig) -> None:
    """Freeze the UNet and give it PEFT LoRA adapters: A Gaussian, B zero, so training starts at the base."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank,
                                init_lora_weights="gaussian", target_modules=list(config.lora_targets or LORA_TARGETS)))


def save_lora(unet: nn.Module, output: Path, kohya: bool = False) -> Path:
    """OUTPUT/pytorch_lora_weights.safetensors (with the adapters' rank and alpha in its metadata) and, with
    ``kohya``, OUTPUT/lora_kohya.safetensors."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    peft_state = get_peft_model_state_dict(unet)
    settings = unet.peft_config["default"]
    with replacing_folder_entries(output) as staging:
        StableDiffusionPipeline.save_lora_weights(staging, unet_lora_layers=convert_state_dict_to_diffusers(peft_state),
                                                  safe_serialization=True, unet_lora_adapter_metadata=settings.to_dict())
        if kohya:
            save_file(kohya_state_dict(peft_state, settings.lora_alpha), staging / KOHYA_FILE,
                      metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(settings.r),
                                "ss_network_alpha": str(settings.lora_alpha), "ss_base_model_version": "sd_v1"})
    return output / DIFFUSERS_FILE


def kohya_state_dict(peft_state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """PEFT keys (``down_blocks.0....to_q.lora_A.weight``) -> kohya's (``lora_unet_down_blocks_0_..._to_q.lora_down.weight``,
    ``.lora_up.weight`` and ``.alpha``)."""
    converted = {}
    for key, value in peft_state.items():
        module, kind = key.rsplit(".lora_", 1)  # kind: "A.weight" or "B.weight"
        name = "lora_unet_" + module.replace(".", "_")
        converted[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.contiguous()
        converted[f"{name}.alpha"] = torch.tensor(float(alpha))
    return converted

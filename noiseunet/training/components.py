"""What a training run is made of: tokenizer, text encoder, optional VAE, UNet and noise schedule.

Fresh runs build or load them from the TrainConfig; resumed runs rebuild the same ones from the files
the first run wrote into the output folder (the tokenizer it trained, the text encoder config).
"""

from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from diffusers import AutoencoderKL, DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

from ..data.batches import BatchSource
from ..files import from_pretrained, replacing_folder_entries
from ..model import NoiseUNet
from ..text import build_text_encoder, load_text_encoder, train_tokenizer
from .config import TrainConfig

TOKENIZER_CORPUS = 100_000  # captions read to train a tokenizer


@dataclass
class Components:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL | None
    unet: NoiseUNet
    scheduler: DDPMScheduler
    train_text_encoder: bool


def build_components(config: TrainConfig, batches: BatchSource) -> Components:
    """The run's models: loaded where the config names them, else built from its preset."""
    output = Path(config.output_dir)
    if config.text_encoder:
        tokenizer, text_encoder = load_text_encoder(config.text_encoder, config.allow_pickle)
        train_text = bool(config.train_text_encoder)
    else:
        saved = output / "tokenizer"
        if saved.is_dir():  # resuming: the tokenizer must be the one the weights were trained with
            tokenizer = CLIPTokenizer.from_pretrained(saved)
        else:
            max_length = config.max_text_length or config.preset.max_text_length
            tokenizer = train_tokenizer(batches.captions(TOKENIZER_CORPUS), max_length=max_length)
            if PartialState().is_main_process:  # every process builds the same one; one writes it
                with replacing_folder_entries(output) as staging:
                    tokenizer.save_pretrained(staging / saved.name)
        preset = config.preset
        text_encoder = build_text_encoder(tokenizer, hidden_size=preset.text_hidden_size,
                                          num_layers=preset.text_layers, num_heads=preset.text_heads)
        train_text = config.train_text_encoder is not False

    vae = None
    channels, sample_size = 3, config.resolution
    if config.vae:
        vae = from_pretrained(AutoencoderKL, config.vae, config.allow_pickle,
                              subfolder="vae" if (Path(config.vae) / "vae").is_dir() else None)
        vae.requires_grad_(False).eval()
        channels = vae.config.latent_channels
        sample_size = config.resolution // 2 ** (len(vae.config.block_out_channels) - 1)

    width = text_encoder.config.hidden_size
    unet_config = config.unet_config
    if unet_config.get("cross_attention_dim", width) != width:
        raise ValueError(f"unet cross_attention_dim={unet_config['cross_attention_dim']} does not match the text "
                         f"encoder's hidden size {width}")
    unet = NoiseUNet(**{**unet_config, "sample_size": sample_size, "in_channels": channels,
                        "out_channels": channels, "cross_attention_dim": width})
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=config.beta_schedule,
                              prediction_type=config.prediction_type, clip_sample=vae is None)
    text_encoder.requires_grad_(train_text)
    return Components(tokenizer, text_encoder, vae, unet, scheduler, train_text)

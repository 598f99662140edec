"""What a training run is made of: tokenizer, text encoder, optional VAE, UNet and noise schedule.

Fresh runs build or load them from the TrainConfig; resumed runs rebuild the same ones from the files
the first run wrote into the output folder (the tokenizer it trained, the text encoder config).
"""

import itertools
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from diffusers import AutoencoderKL, DDPMScheduler
from torch.utils.data import Dataset, Subset
from transformers import CLIPTextModel, CLIPTokenizer

from ..data import HFImageCaptions, ImageCaptionFolder, ShapesDataset
from ..data.shapes import split_specs
from ..data.streaming import StreamedBatches
from ..files import from_pretrained, replacing_folder_entries
from ..model import NoiseUNet
from ..text import build_text_encoder, load_text_encoder, train_tokenizer
from .config import SMALL_TEXT_ENCODER, TrainConfig


@dataclass
class Components:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL | None
    unet: NoiseUNet
    scheduler: DDPMScheduler
    train_text_encoder: bool


def caption_corpus(source: Dataset | StreamedBatches, limit: int = 100_000) -> list[str]:
    """Captions to train a tokenizer on, read without decoding any image."""
    if isinstance(source, StreamedBatches):
        return _flat_strings(source.captions(min(limit, 10_000)))
    indices = range(min(limit, len(source)))
    if isinstance(source, Subset):  # the usable samples of a checked source
        source, indices = source.dataset, source.indices[:limit]
    if isinstance(source, ShapesDataset):
        return [spec.caption for spec in split_specs("all")]
    if isinstance(source, ImageCaptionFolder):
        captions = [source.rows[i][source.caption_column] for i in indices]
    elif isinstance(source, HFImageCaptions):
        captions = source.dataset.select(indices)[source.caption_column]
    else:
        captions = [source[i]["caption"] for i in indices]
    return _flat_strings(captions)


def _flat_strings(captions: list) -> list[str]:
    """Captions, some of them lists of alternatives, as one flat list of strings (anything else dropped)."""
    flat = itertools.chain.from_iterable(c if isinstance(c, (list, tuple)) else [c] for c in captions)
    return [c for c in flat if isinstance(c, str)]


def build_components(config: TrainConfig, source: Dataset | StreamedBatches) -> Components:
    output = Path(config.output_dir)
    if config.text_encoder:
        tokenizer, text_encoder = load_text_encoder(config.text_encoder, config.allow_pickle)
        train_text = bool(config.train_text_encoder)
    else:
        saved = output / "tokenizer"
        if saved.is_dir():  # resuming: the tokenizer must be the one the weights were trained with
            tokenizer = CLIPTokenizer.from_pretrained(saved)
        else:
            tokenizer = train_tokenizer(caption_corpus(source), max_length=config.max_text_length)
            if PartialState().is_main_process:  # every process builds the same one; one writes it
                with replacing_folder_entries(output) as staging:
                    tokenizer.save_pretrained(staging / saved.name)
        text_encoder = build_text_encoder(tokenizer, **SMALL_TEXT_ENCODER)
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
    unet_config = dict(config.unet)
    if unet_config.get("cross_attention_dim", width) != width:
        raise ValueError(f"unet cross_attention_dim={unet_config['cross_attention_dim']} does not match the text "
                         f"encoder's hidden size {width}")
    unet = NoiseUNet(**{**unet_config, "sample_size": sample_size, "in_channels": channels,
                        "out_channels": channels, "cross_attention_dim": width})
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=config.beta_schedule,
                              prediction_type=config.prediction_type, clip_sample=vae is None)
    text_encoder.requires_grad_(train_text)
    return Components(tokenizer, text_encoder, vae, unet, scheduler, train_text)

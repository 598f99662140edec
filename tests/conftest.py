"""Tiny, locally built components (no model hub is reachable, and tests must stay fast)."""

import os

import pytest
import torch
from diffusers import AutoencoderKL

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that tried to download would fail loudly, not hang

from noiseunet import NoiseUNet, NoiseUNetPipeline
from noiseunet.text import build_text_encoder, train_tokenizer

CAPTIONS = [f"a {c} {s} on the {p}" for c in ("red", "green", "blue") for s in ("circle", "square") for p in ("left", "right")]


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(CAPTIONS, vocab_size=300)


@pytest.fixture(scope="session")
def text_encoder(tokenizer):
    torch.manual_seed(0)
    return build_text_encoder(tokenizer, hidden_size=32, num_layers=2, num_heads=2).eval()


@pytest.fixture(scope="session")
def vae():
    """A 2-level AutoencoderKL: 32x32 pixels <-> 4x16x16 latents."""
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=32,
    ).eval()


def tiny_unet(channels: int, sample_size: int, text_width: int) -> NoiseUNet:
    torch.manual_seed(0)
    return NoiseUNet(sample_size=sample_size, in_channels=channels, out_channels=channels, block_out_channels=(32, 32),
                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=2,
                     cross_attention_dim=text_width).eval()


@pytest.fixture
def pixel_pipe(text_encoder, tokenizer):
    from diffusers import DDPMScheduler

    pipe = NoiseUNetPipeline(unet=tiny_unet(3, 16, text_encoder.config.hidden_size), text_encoder=text_encoder,
                             tokenizer=tokenizer, scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe

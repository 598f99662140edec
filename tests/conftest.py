"""Tiny, locally built components (no model hub is reachable, and tests must stay fast)."""

import os

import pytest
import torch
from diffusers import AutoencoderKL

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that tried to download would fail loudly, not hang

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

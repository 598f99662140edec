"""NoiseUNet inside diffusers' own pipelines, built from tiny local components."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, StableDiffusionPipeline

from noiseunet import NoiseUNet

LATENT_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1, attention_head_dim=2, cross_attention_dim=32,
)


def sd_pipeline(unet, vae, text_encoder, tokenizer) -> StableDiffusionPipeline:
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def generate(pipe, guidance_scale=1.0, num_images_per_prompt=1):
    return pipe(
        ["a red circle on the left", "a blue square on the right"], num_inference_steps=3,
        guidance_scale=guidance_scale, num_images_per_prompt=num_images_per_prompt, height=32, width=32,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).images


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return NoiseUNet(**LATENT_UNET).eval()


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0], ids=["no-guidance", "guidance"])
def test_stable_diffusion_pipeline_matches_the_diffusers_unet(unet, vae, text_encoder, tokenizer, guidance_scale):
    images = generate(sd_pipeline(unet, vae, text_encoder, tokenizer), guidance_scale, num_images_per_prompt=2)
    assert images.shape == (4, 32, 32, 3) and np.isfinite(images).all()
    reference = generate(sd_pipeline(unet.to_diffusers(), vae, text_encoder, tokenizer), guidance_scale, 2)
    np.testing.assert_allclose(images, reference, atol=1e-4)


def test_guidance_changes_the_images(unet, vae, text_encoder, tokenizer):
    pipe = sd_pipeline(unet, vae, text_encoder, tokenizer)
    assert np.abs(generate(pipe, 1.0) - generate(pipe, 4.0)).max() > 1e-3


def test_pipeline_save_and_load_reproduces_images(unet, vae, text_encoder, tokenizer, tmp_path):
    pipe = sd_pipeline(unet, vae, text_encoder, tokenizer)
    before = generate(pipe, 3.0)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.unet, NoiseUNet)
    np.testing.assert_allclose(generate(loaded, 3.0), before, atol=1e-5)


def test_ddpm_pipeline_runs_an_unconditional_unet():
    torch.manual_seed(0)
    unet = NoiseUNet(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32),
                     down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=20))
    images = pipe(batch_size=2, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all() and images.std() > 0

"""PatchAutoencoder: exact patches of pixels, in NoiseUNet's pipeline, diffusers' and the trainer."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_unet
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from test_training import tiny_config

from noiseunet import NoiseUNetPipeline
from noiseunet.model.patches import PatchAutoencoder
from noiseunet.training import TrainConfig, train
from noiseunet.training.components import noise_schedule
from noiseunet.training.step import half_resolution


def test_patches_are_the_pixels_folded_into_channels_and_back_exactly():
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latent = PatchAutoencoder(2).encode(x).latent_dist
    z = latent.sample(torch.Generator().manual_seed(1))
    assert z.shape == (2, 12, 4, 6) and torch.equal(z, latent.mode())  # a point mass: sampling adds nothing
    # Channel c * 4 + 2 * i + j of latent pixel (h, w) is pixel (2h + i, 2w + j) of channel c.
    for c, i, j, h, w in ((0, 0, 0, 0, 0), (1, 1, 0, 2, 3), (2, 1, 1, 3, 5)):
        assert z[1, c * 4 + 2 * i + j, h, w] == x[1, c, 2 * h + i, 2 * w + j]
    assert torch.equal(PatchAutoencoder(2).decode(z, generator=None).sample, x)
    assert torch.equal(PatchAutoencoder(4)(torch.cat([x, x], -1)), torch.cat([x, x], -1))
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        PatchAutoencoder(4).encode(x[..., :6])
    with pytest.raises(ValueError, match="power of 2"):
        PatchAutoencoder(3)


def test_half_resolution_under_patches_is_the_patches_of_the_halved_pixels():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    patches = PatchAutoencoder(2)
    halved = half_resolution(patches.encode(x).latent_dist.mode(), patches)
    assert torch.allclose(halved, patches.encode(F.avg_pool2d(x, 2)).latent_dist.mode())
    assert torch.equal(half_resolution(x, None), F.avg_pool2d(x, 2))


def test_a_patch_pipeline_samples_alike_in_stable_diffusion_pipeline(text_encoder, tokenizer, tmp_path):
    patches = PatchAutoencoder(2)
    # The trainer's schedule under DPM-Solver++: StableDiffusionPipeline turns a DDPM schedule's clip_sample off.
    scheduler = DPMSolverMultistepScheduler.from_config(noise_schedule(TrainConfig(), patches).config)
    pipe = NoiseUNetPipeline(unet=tiny_unet(12, 8, text_encoder.config.hidden_size), text_encoder=text_encoder,
                             tokenizer=tokenizer, scheduler=scheduler, vae=patches)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle on the left", "a blue square on the right"]
    run = lambda p: p(prompts, num_inference_steps=3, guidance_scale=1.0, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
    ours = run(pipe)
    assert ours.shape == (2, 16, 16, 3)  # 8 x 8 latents of 2 x 2 patches
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["vae"] == ["noiseunet.model.patches",
                                                                             "PatchAutoencoder"]
    sd = StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    assert isinstance(sd.vae, PatchAutoencoder) and sd.vae_scale_factor == 2
    np.testing.assert_allclose(run(sd), ours, atol=1e-5)


def test_patch_size_errors_name_the_option():
    with pytest.raises(ValueError, match="--patch-size must be a power of 2"):
        TrainConfig(patch_size=3)
    with pytest.raises(ValueError, match="--resolution 36 is not a multiple of the patch size 8"):
        TrainConfig(patch_size=8, resolution=36)
    with pytest.raises(ValueError, match="--resolution 33 is not a multiple of the patch size 2"):
        TrainConfig(resolution=33)  # the small preset's patches
    assert TrainConfig(resolution=33, patch_size=1).patches == 1 and TrainConfig().patches == 2
    assert TrainConfig(model="small").patches == 2  # a folder's default preset draws 32 px at a 16 px model's price
    assert TrainConfig(model="base").patches == 1 and TrainConfig(vae="stabilityai/sd-vae-ft-mse").patches == 1
    with pytest.raises(ValueError, match="--patch-size 2 folds the pixels of a new model"):
        TrainConfig(patch_size=2, vae="stabilityai/sd-vae-ft-mse")


def test_a_patch_run_trains_saves_and_fine_tunes_in_patches(tmp_path):
    output = train(tiny_config(tmp_path / "run", patch_size=2, max_steps=2))
    unet_config = json.loads((output / "unet" / "config.json").read_text())
    assert unet_config["in_channels"] == 12 and unet_config["sample_size"] == 8  # 16 px in 2 x 2 patches
    pipe = NoiseUNetPipeline.from_pretrained(output)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.vae, PatchAutoencoder) and pipe.scheduler.config.clip_sample
    image = pipe("a red circle on the left", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    tuned = train(tiny_config(tmp_path / "tuned", pretrained=str(output), unet={}, max_steps=1))
    assert isinstance(NoiseUNetPipeline.from_pretrained(tuned).vae, PatchAutoencoder)

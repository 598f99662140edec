"""NoiseUNetPipeline: every scheduler, guidance, negative prompts, output types, seeds, loading."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from conftest import tiny_unet

from noiseunet import NoiseUNet, NoiseUNetPipeline
from noiseunet.pipeline import SAMPLING, SCHEDULERS, generate, use_scheduler
from noiseunet.precision import resolve_precision

PROMPTS = ["a red circle on the left", "a blue square on the right"]


def run(pipe, **kwargs):
    kwargs = {"num_inference_steps": 3, "generator": torch.Generator().manual_seed(0), "output_type": "np", **kwargs}
    return pipe(PROMPTS, **kwargs).images


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_samples(pixel_pipe, name):
    images = run(use_scheduler(pixel_pipe, name))
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1
    assert type(pixel_pipe.scheduler) is SCHEDULERS[name]


def test_ddim_steps_with_the_noise_of_its_clipped_x0(pixel_pipe):
    """In pixel space DDIM clips x_0 to [-1, 1]; the pipeline steps with the noise that clipped x_0 implies, as
    diffusers' DDIMPipeline does with use_clipped_model_output=True, not with the unclipped prediction."""
    pipe = use_scheduler(pixel_pipe, "ddim")
    pipe.scheduler.register_to_config(prediction_type="v_prediction")
    guidance, prompts = 6.0, PROMPTS[:1]
    images = pipe(prompts, num_inference_steps=4, guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images

    def by_hand(clipped: bool) -> torch.Tensor:  # the sampling loop written out
        with torch.no_grad():
            context = torch.cat([pipe.encode([""]), pipe.encode(prompts)])
            x = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(0))
            pipe.scheduler.set_timesteps(4)
            for t in pipe.scheduler.timesteps:
                uncond, cond = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.chunk(2)
                x = pipe.scheduler.step(uncond + guidance * (cond - uncond), t, x,
                                        use_clipped_model_output=clipped).prev_sample
        return (x / 2 + 0.5).clamp(0, 1)

    torch.testing.assert_close(images, by_hand(clipped=True), atol=1e-5, rtol=0)
    assert (images - by_hand(clipped=False)).abs().max() > 1e-3  # the clipping mattered here


def test_unknown_scheduler_is_a_clear_error(pixel_pipe):
    with pytest.raises(ValueError, match="unknown scheduler 'heun'"):
        use_scheduler(pixel_pipe, "heun")


def test_guidance_one_is_the_plain_conditional_prediction(pixel_pipe):
    """guidance 1.0 skips the unconditional half; the result equals eps_u + 1 * (eps_c - eps_u)."""
    unguided = run(pixel_pipe, guidance_scale=1.0)
    with torch.no_grad():  # the guided formula at scale 1 must give the same images (up to float error)
        guided_at_one = run(pixel_pipe, guidance_scale=1.0 + 1e-7)
    np.testing.assert_allclose(unguided, guided_at_one, atol=1e-4)
    assert np.abs(run(pixel_pipe, guidance_scale=5.0) - unguided).max() > 1e-3


def test_negative_prompt_replaces_the_empty_prompt(pixel_pipe):
    plain = run(pixel_pipe, guidance_scale=4.0)
    np.testing.assert_allclose(run(pixel_pipe, guidance_scale=4.0, negative_prompt=""), plain, atol=1e-6)
    assert np.abs(run(pixel_pipe, guidance_scale=4.0, negative_prompt="a green triangle") - plain).max() > 1e-3


def test_output_types(pixel_pipe):
    pil = run(pixel_pipe, output_type="pil")
    tensor = run(pixel_pipe, output_type="pt")
    array = run(pixel_pipe, output_type="np")
    assert len(pil) == 2 and pil[0].size == (16, 16)
    assert tuple(tensor.shape) == (2, 3, 16, 16)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pil[0]) / 255.0, array[0], atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="output_type"):
        run(pixel_pipe, output_type="latent-ish")


def test_same_seed_same_images_whatever_the_batch(pixel_pipe):
    use_scheduler(pixel_pipe, "euler_a")  # a stochastic sampler: noise is drawn at every step too
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0)
    together = generate(pixel_pipe, PROMPTS, images_per_prompt=2, seed=5, batch_size=4, **kwargs)
    one_by_one = generate(pixel_pipe, PROMPTS, images_per_prompt=2, seed=5, batch_size=1, **kwargs)
    for row_a, row_b in zip(together, one_by_one):
        for a, b in zip(row_a, row_b):
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert not np.array_equal(np.asarray(together[0][0]), np.asarray(together[0][1]))  # seeds differ


def test_precision_is_the_unets_autocast(pixel_pipe):
    """bf16 sampling (the default where the CPU has AVX-512-BF16) runs the UNet in bf16 and draws the same
    images as float32 up to bf16 rounding; "no" is float32 throughout."""
    seen = []
    hook = pixel_pipe.unet.conv_in.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    kwargs = dict(images_per_prompt=2, seed=3, num_inference_steps=4, guidance_scale=2.0)
    try:
        fp32 = generate(pixel_pipe, PROMPTS, precision="no", **kwargs)
        assert set(seen) == {torch.float32}
        seen.clear()
        bf16 = generate(pixel_pipe, PROMPTS, precision="bf16", **kwargs)
        assert set(seen) == {torch.bfloat16}
    finally:
        hook.remove()
    a, b = (np.stack([np.asarray(im, dtype=float) for row in rows for im in row]) for rows in (fp32, bf16))
    assert np.abs(a - b).mean() < 3  # of 255: the same pictures
    assert resolve_precision("auto", "cpu") in ("bf16", "no") and resolve_precision("fp16", "cpu") == "fp16"


def test_bad_arguments_are_named(pixel_pipe):
    for kwargs, message in [({"num_inference_steps": 0}, "num_inference_steps"), ({"guidance_scale": -1}, "guidance"),
                            ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
                            ({"height": -4}, "height must be a positive multiple of 1")]:
        with pytest.raises(ValueError, match=message):
            pixel_pipe(PROMPTS, **kwargs)


def test_save_and_load_round_trip(pixel_pipe, tmp_path):
    before = run(pixel_pipe, guidance_scale=3.0)
    pixel_pipe.save_pretrained(tmp_path)
    loaded = NoiseUNetPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.unet, NoiseUNet) and loaded.vae is None
    np.testing.assert_allclose(run(loaded, guidance_scale=3.0), before, atol=1e-6)


def test_the_saved_guidance_is_the_default_and_a_given_one_replaces_it(pixel_pipe, tmp_path):
    """default_guidance_scale travels in model_index.json; without it the package's SAMPLING guidance applies."""
    assert pixel_pipe.guidance_scale == SAMPLING.guidance_scale
    np.testing.assert_allclose(run(pixel_pipe), run(pixel_pipe, guidance_scale=SAMPLING.guidance_scale), atol=1e-6)
    NoiseUNetPipeline(**pixel_pipe.components, default_guidance_scale=7.0).save_pretrained(tmp_path)
    loaded = NoiseUNetPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.guidance_scale == 7.0 and loaded.config.default_guidance_scale == 7.0
    np.testing.assert_allclose(run(loaded), run(pixel_pipe, guidance_scale=7.0), atol=1e-6)
    assert np.abs(run(loaded) - run(loaded, guidance_scale=2.0)).max() > 1e-3


def test_the_saved_sampler_is_the_default_and_a_given_one_replaces_it(pixel_pipe, tmp_path):
    """default_scheduler and default_steps travel in model_index.json: use_scheduler(pipe) and a call without
    steps take them; without them, SAMPLING's scheduler, and diffusers' 50 steps for a direct call."""
    assert pixel_pipe.sampler == (SAMPLING.scheduler, SAMPLING.steps)
    assert type(use_scheduler(pixel_pipe).scheduler) is SCHEDULERS[SAMPLING.scheduler]
    NoiseUNetPipeline(**pixel_pipe.components, default_scheduler="euler_a", default_steps=7).save_pretrained(tmp_path)
    loaded = NoiseUNetPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampler == ("euler_a", 7)
    assert type(use_scheduler(loaded).scheduler) is SCHEDULERS["euler_a"]
    np.testing.assert_allclose(run(loaded, num_inference_steps=None), run(loaded, num_inference_steps=7), atol=1e-6)
    assert len(loaded.scheduler.timesteps) == 7
    run(pixel_pipe, num_inference_steps=None)
    assert len(pixel_pipe.scheduler.timesteps) == 50
    with pytest.raises(ValueError, match="default_scheduler must be one of .*got 'heun'"):
        NoiseUNetPipeline(**pixel_pipe.components, default_scheduler="heun")


def test_latent_folder_loads_in_stable_diffusion_pipeline(text_encoder, tokenizer, vae, tmp_path):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = NoiseUNetPipeline(unet=tiny_unet(4, 16, text_encoder.config.hidden_size), text_encoder=text_encoder,
                             tokenizer=tokenizer, scheduler=scheduler, vae=vae)
    pipe.set_progress_bar_config(disable=True)
    ours = run(pipe, guidance_scale=1.0, height=32, width=32)
    assert ours.shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="width must be a positive multiple of 2 .*got 33"):
        run(pipe, height=32, width=33)
    pipe.save_pretrained(tmp_path)
    sd = StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    assert isinstance(sd.unet, NoiseUNet)
    theirs = run(sd, guidance_scale=1.0, height=32, width=32)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)

"""scripts/layout_probe.py: the clean image a model predicts from pure noise, against diffusers' own conversion."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from conftest import tiny_unet

from noiseunet import NoiseUNetPipeline
from noiseunet.model.patches import PatchAutoencoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import layout_probe  # noqa: E402

PROMPTS = ["a red circle to the left of a blue square", "a red circle above a blue square"]


def v_pipe(pixel_pipe) -> NoiseUNetPipeline:
    return NoiseUNetPipeline(**pixel_pipe.components | {"scheduler": DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")})


@torch.no_grad()
def test_mean_prediction_is_diffusers_x0_at_the_last_timestep_averaged_over_seeds(pixel_pipe):
    pipe = v_pipe(pixel_pipe)
    means = layout_probe.mean_prediction(pipe, PROMPTS, seeds=3)
    reference = DDPMScheduler.from_config(pipe.scheduler.config)  # clip_sample: x0 clamped to [-1, 1]
    reference.set_timesteps(1000)
    noise = torch.stack([torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    x_t = (1 - reference.alphas_cumprod[999]).sqrt() * noise
    for prompt, mean in zip(PROMPTS, means):
        text = pipe.encode([prompt]).expand(3, -1, -1)
        v = pipe.unet(x_t, torch.full((3,), 999), text).sample
        x0 = torch.stack([reference.step(v[i:i + 1], 999, x_t[i:i + 1]).pred_original_sample[0] for i in range(3)])
        torch.testing.assert_close(mean, x0.mean(0), atol=1e-5, rtol=0)
    assert not torch.allclose(means[0], means[1])  # the prompt reaches the prediction


@torch.no_grad()
def test_a_patch_models_mean_prediction_is_its_patches_unfolded(text_encoder, tokenizer):
    patches = PatchAutoencoder(2)
    pipe = NoiseUNetPipeline(unet=tiny_unet(12, 8, text_encoder.config.hidden_size), text_encoder=text_encoder,
                             tokenizer=tokenizer, vae=patches, scheduler=DDPMScheduler(
                                 beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"))
    means = layout_probe.mean_prediction(pipe, PROMPTS[:1], seeds=2)
    assert means.shape == (1, 3, 16, 16)
    alpha_bar = pipe.scheduler.alphas_cumprod[999]
    noise = torch.stack([torch.randn(12, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(2)])
    x_t = (1 - alpha_bar).sqrt() * noise
    v = pipe.unet(x_t, torch.full((2,), 999), pipe.encode(PROMPTS[:1]).expand(2, -1, -1)).sample
    x0 = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v
    torch.testing.assert_close(means[0], F.pixel_shuffle(x0.clamp(-1, 1), 2).mean(0), atol=1e-5, rtol=0)


def test_picture_has_a_row_per_prompt_with_the_mean_and_the_samples(pixel_pipe):
    picture = layout_probe.probe_picture(v_pipe(pixel_pipe), PROMPTS, seeds=2, samples=3)
    assert picture.width == 300 + 4 * (64 + 4) + 4 and picture.height == 24 + 2 * (64 + 4) + 4


def test_epsilon_models_are_refused_by_name(pixel_pipe):
    with pytest.raises(ValueError, match="needs a v_prediction or sample model.*got epsilon"):
        layout_probe.mean_prediction(pixel_pipe, PROMPTS)


def test_word_similarity_shows_what_a_causal_encoder_cannot_carry_back(pixel_pipe):
    other = "a red circle to the right of a blue square"
    pairs = layout_probe.word_similarity(pixel_pipe, PROMPTS[0], other)
    first, second = pixel_pipe.tokenizer([PROMPTS[0], other]).input_ids
    assert [word for word, _ in pairs] == [t.removesuffix("</w>") for t in pixel_pipe.tokenizer.convert_ids_to_tokens(first)]
    states = pixel_pipe.encode([PROMPTS[0], other])
    expected = torch.cosine_similarity(states[0, :len(first)], states[1, :len(first)], dim=-1)
    torch.testing.assert_close(torch.tensor([value for _, value in pairs]), expected)
    differs = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    assert min(value for _, value in pairs[:differs]) > 0.9999  # causal: the words before "left" cannot know it
    assert pairs[differs][1] < 0.99

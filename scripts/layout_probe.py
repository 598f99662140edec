"""What a model has decided about a prompt before any detail: its prediction of the clean image from pure noise.

At the first sampling step (t = T - 1 with trailing spacing) the noisy image holds nothing, so the best a
denoiser can predict is the mean of every image the prompt allows: where things go and in what colours.
The sampler then commits to a layout within a few steps. If two prompts that ask for different layouts
("a red circle to the left of a blue square", "a red circle above a blue square") give the same mean, the
model does not tell them apart and the seed, not the prompt, decides the layout.

It also prints, for every prompt after the first, how alike the text encoder's state of each word of the
first prompt is to the state at the same place in that prompt (cosine similarity): where the prompts'
meanings differ but the states do not, the UNet cannot read the difference.

For each prompt the picture shows that mean (over ``--seeds`` noises) beside what the sampler draws from
the first few seeds (the package's sampling settings, the model's own guidance).

    python scripts/layout_probe.py runs/main "a red circle to the left of a blue square" \\
        "a red circle above a blue square" "a red circle on the left" --out layout_probe.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from noiseunet.data.transforms import to_pil
from noiseunet.files import save_image
from noiseunet.grid import image_grid
from noiseunet.model.patches import latents_are_pixels
from noiseunet.pipeline import SAMPLING, NoiseUNetPipeline, generate, load_pipeline, use_scheduler


@torch.no_grad()
def mean_prediction(pipe: NoiseUNetPipeline, prompts: list[str], seeds: int = 16) -> torch.Tensor:
    """(len(prompts), 3, H, W) in [-1, 1]: the clean image the UNet predicts at the last training timestep
    from pure noise, averaged over ``seeds`` noises (seeds 0, 1, ...). Pixel-space models (on pixels or
    patches of them) with v- or sample-prediction: an epsilon model's image is undefined where no signal is
    left."""
    if not latents_are_pixels(getattr(pipe, "vae", None)):
        raise ValueError("layout_probe reads pixel-space models (this pipeline has a VAE)")
    prediction = pipe.scheduler.config.prediction_type
    if prediction not in ("v_prediction", "sample"):
        raise ValueError(f"layout_probe needs a v_prediction or sample model (at pure noise an epsilon model's "
                         f"image is 0 / 0), got {prediction}")
    unet = pipe.unet
    last = pipe.scheduler.config.num_train_timesteps - 1
    alpha_bar = pipe.scheduler.alphas_cumprod[last].to(torch.float32)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in range(seeds)])
    x_t = ((1 - alpha_bar).sqrt() * noise).to(pipe.device, unet.dtype)  # the noise level of t = T - 1, no image
    means = []
    for text in pipe.encode(prompts):
        output = unet(x_t, torch.full((seeds,), last, device=pipe.device), text.expand(seeds, -1, -1)).sample.float()
        if prediction == "v_prediction":  # x_t = a x0 + s eps, v = a eps - s x0  =>  x0 = a x_t - s v
            output = alpha_bar.sqrt() * x_t.float() - (1 - alpha_bar).sqrt() * output
        if pipe.vae is not None:  # patches of pixels, unfolded
            output = pipe.vae.decode(output).sample
        means.append(output.clamp(-1, 1).mean(0))
    return torch.stack(means).cpu()


@torch.no_grad()
def word_similarity(pipe: NoiseUNetPipeline, prompt: str, other: str) -> list[tuple[str, float]]:
    """``prompt``'s tokens, each with the cosine similarity of its text-encoder state to the state at the
    same place in ``other``: what the UNet can tell apart. Comparing "a red circle to the left of a blue
    square" with "... to the right of ...", a word after *left* at 1.00 does not carry the relation. The
    words are compared place by place, so the prompts should differ in a word, not in their length."""
    ids = pipe.tokenizer([prompt]).input_ids[0]
    states = pipe.encode([prompt, other]).float()
    similarity = torch.cosine_similarity(states[0, :len(ids)], states[1, :len(ids)], dim=-1)
    words = [token.removesuffix("</w>") for token in pipe.tokenizer.convert_ids_to_tokens(ids)]
    return list(zip(words, similarity.tolist()))


def probe_picture(pipe: NoiseUNetPipeline, prompts: list[str], seeds: int = 16, samples: int = 4) -> Image.Image:
    """A row per prompt: the mean prediction from pure noise, then ``samples`` sampled images (seeds 0, 1, ...)."""
    means = mean_prediction(pipe, prompts, seeds)
    drawn = generate(use_scheduler(pipe, SAMPLING.scheduler), prompts, samples, SAMPLING.seed,
                     num_inference_steps=SAMPLING.steps)
    rows = [[mean, *images] for mean, images in zip(to_pil(means), drawn)]
    return image_grid(rows, prompts, cell=64, label_width=300,
                      title=f"prediction from pure noise (mean of {seeds} seeds) | sampled, seeds 0-{samples - 1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", help="a pipeline folder written by noiseunet train")
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--seeds", type=int, default=16, help="noises the mean prediction averages over")
    parser.add_argument("--samples", type=int, default=4, help="sampled images shown beside it")
    parser.add_argument("--out", type=Path, default=Path("layout_probe.png"))
    args = parser.parse_args()
    pipe = load_pipeline(args.dir)
    pipe.set_progress_bar_config(disable=True)
    for other in args.prompts[1:]:
        pairs = word_similarity(pipe, args.prompts[0], other)
        print(f"text states against '{other}': " + " ".join(f"{word}:{value:.2f}" for word, value in pairs))
    print(f"picture: {save_image(probe_picture(pipe, args.prompts, args.seeds, args.samples), args.out)}")


if __name__ == "__main__":
    main()

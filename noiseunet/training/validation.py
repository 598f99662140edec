"""Validation grids during training, drawn with the EMA weights (the ones the run will save)."""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from PIL import Image
from torch import nn

from ..files import save_image
from ..grid import image_grid
from ..pipeline import SAMPLING, NoiseUNetPipeline, generate, use_scheduler
from .components import Components


def pipeline_defaults(parts: Components) -> dict:
    """The ``NoiseUNetPipeline`` arguments that save the run's sampling defaults in model_index.json."""
    scheduler, steps = parts.sampler or (None, None)
    return dict(default_guidance_scale=parts.guidance_scale, default_scheduler=scheduler, default_steps=steps)


def trained_parameters(unet: nn.Module, text_encoder: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer and the EMA hold: those that require gradients (all of the UNet, or only
    its LoRA adapters; the text encoder's when it trains)."""
    return [p for model in (unet, text_encoder) for p in model.parameters() if p.requires_grad]


@contextmanager
def ema_weights(accelerator: Accelerator, parts: Components, unet: nn.Module, text_encoder: nn.Module,
                ema: EMAModel) -> Iterator[tuple[nn.Module, nn.Module]]:
    """The unwrapped models in eval mode with their EMA weights swapped in, restored afterwards."""
    unet, text_encoder = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
    parameters = trained_parameters(unet, text_encoder)
    ema.store(parameters)
    ema.copy_to(parameters)
    modes = [m.training for m in (unet, text_encoder)]
    unet.eval(), text_encoder.eval()
    try:
        yield unet, text_encoder
    finally:
        ema.restore(parameters)
        unet.train(modes[0]), text_encoder.train(modes[1])


def validation_grid(accelerator: Accelerator, parts: Components, unet: nn.Module, text_encoder: nn.Module,
                    ema: EMAModel, output: Path, step: int, prompts: list[str],
                    images_per_prompt: int = 4) -> Image.Image:
    """samples/step-N.png: a grid of the validation prompts (a row each) with the sampler, steps and guidance
    the run saves with its pipeline."""
    with ema_weights(accelerator, parts, unet, text_encoder, ema) as (eval_unet, eval_text_encoder):
        pipe = NoiseUNetPipeline(unet=eval_unet, text_encoder=eval_text_encoder, tokenizer=parts.tokenizer,
                                 scheduler=parts.scheduler, vae=parts.vae, **pipeline_defaults(parts))
        use_scheduler(pipe)
        pipe.set_progress_bar_config(disable=True)
        rows = generate(pipe, prompts, images_per_prompt, SAMPLING.seed, num_inference_steps=pipe.sampler[1],
                        precision=accelerator.mixed_precision)
    grid = image_grid(rows, prompts, title=f"step {step}")
    save_image(grid, output / "samples" / f"step-{step}.png")
    return grid

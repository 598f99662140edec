"""NoiseUNetPipeline: prompts in, images out, with any diffusers scheduler and classifier-free guidance.

The sampling loop is the DDPM reverse process (Ho et al. 2020) driven by the scheduler: start from
Gaussian noise x_T and, for each of the scheduler's timesteps, predict the noise with the UNet and let
the scheduler take the step to x_{t-1}. DDPM, DDIM, DPM-Solver++, Euler and UniPC only differ in that step.
"""

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    ImagePipelineOutput,
    UniPCMultistepScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor

from .files import from_pretrained
from .model.patches import latents_are_pixels
from .precision import autocast
from .text import encode_prompts

OUTPUT_TYPES = ("pil", "np", "pt")
# Short names for the command line; any other diffusers scheduler can be set on ``pipe.scheduler``.
SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}



@dataclass(frozen=True)
class SamplingSettings:
    """How the package samples unless told otherwise: the CLI, the main job, validation grids and the
    evaluator all read these. A pipeline folder may save its own sampler, steps and guidance
    (``NoiseUNetPipeline.sampler``, ``.guidance_scale``), which then replace them: a new model of the built-in
    shapes saves 50 DDPM steps (``training.config.SHAPES_SAMPLER``). 20 DPM-Solver++ steps are the usual pick
    for pretrained Stable Diffusion and did as well as 1000 DDPM steps on the shapes' first, 4-level model.
    Guidance 3 is classifier-free guidance (Ho & Salimans 2022) at a small model's scale, the best on the
    shapes (guidance 6 scored 64.1% / 64.1% over the families against 75.0% / 68.2%)."""

    scheduler: str = "dpm++"
    steps: int = 20
    guidance_scale: float = 3.0
    seed: int = 0


SAMPLING = SamplingSettings()


def use_scheduler(pipe: DiffusionPipeline, name: str | None = None) -> DiffusionPipeline:
    """Swap the pipeline's sampler for ``SCHEDULERS[name]`` (None: the pipeline's own, ``sampler``, else
    ``SAMPLING``'s), keeping the trained noise schedule.

    In pixel space the image lives in [-1, 1], and the x_0 a solver extrapolates from a very noisy x_t can
    land far outside it (saturated salt-and-pepper pixels in 20-step DPM-Solver++ samples): solvers that
    support it threshold x_0 to [-1, 1], as DDPM's ``clip_sample`` does.
    """
    if name is None:
        name = pipe.sampler[0] if isinstance(pipe, NoiseUNetPipeline) else SAMPLING.scheduler
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    scheduler_class = SCHEDULERS[name]
    takes_threshold = "thresholding" in inspect.signature(scheduler_class.__init__).parameters
    clip_x0 = latents_are_pixels(getattr(pipe, "vae", None)) and takes_threshold
    extra = {"thresholding": True, "sample_max_value": 1.0} if clip_x0 else {}
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **extra)
    return pipe


class NoiseUNetPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text-to-image sampling with a NoiseUNet (or any UNet2DConditionModel), in pixel space or, with a
    ``vae``, in latent space. Loads any folder ``noiseunet train`` writes: ``NoiseUNetPipeline.from_pretrained(DIR)``.
    ``load_lora_weights`` takes LoRA files as Stable Diffusion pipelines do (a ``--lora-rank`` run's, or others')."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler, vae=None, default_guidance_scale: float | None = None,
                 default_scheduler: str | None = None, default_steps: int | None = None):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, vae=vae)
        if default_scheduler is not None and default_scheduler not in SCHEDULERS:
            raise ValueError(f"default_scheduler must be one of {', '.join(SCHEDULERS)}, got {default_scheduler!r}")
        # Saved in model_index.json, as Stable Diffusion pipelines save requires_safety_checker.
        self.register_to_config(default_guidance_scale=default_guidance_scale, default_scheduler=default_scheduler,
                                default_steps=default_steps)
        self.image_processor = VaeImageProcessor(do_resize=False)

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance ``__call__`` uses unless told: the one the trainer saved for this
        model's data (``default_guidance_scale`` in model_index.json; ``noiseunet train`` saves
        ``config.MANY_CONCEPTS_GUIDANCE`` for folder and dataset data), else ``SAMPLING.guidance_scale``."""
        saved = self.config.get("default_guidance_scale")
        return SAMPLING.guidance_scale if saved is None else float(saved)

    @property
    def sampler(self) -> tuple[str, int]:
        """(scheduler name, steps) that ``use_scheduler`` and ``__call__`` use unless told: the ones the trainer
        saved for this model's data (``default_scheduler``, ``default_steps`` in model_index.json), else
        ``SAMPLING``'s."""
        name, steps = self.config.get("default_scheduler"), self.config.get("default_steps")
        return name or SAMPLING.scheduler, int(steps or SAMPLING.steps)

    @property
    def scale_factor(self) -> int:
        """Pixels per latent pixel: 2^(VAE levels - 1), or 1 in pixel space."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    def _step_kwargs(self, generator) -> dict:
        """What ``scheduler.step`` takes besides the prediction: stochastic samplers (DDPM, Euler ancestral)
        draw fresh noise each step from the caller's generators; DDIM steps with the noise implied by its
        clipped x_0 (``use_clipped_model_output``). Without that, DDIM combines the clipped x_0 with the
        unclipped noise, which under guidance 3 drew 44% of a 30-minute shapes model's single objects right
        against 100% at guidance 1 (the other samplers: 100% at both)."""
        accepts = inspect.signature(self.scheduler.step).parameters
        kwargs = {"generator": generator} if "generator" in accepts else {}
        if "use_clipped_model_output" in accepts:
            kwargs["use_clipped_model_output"] = True
        return kwargs

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return encode_prompts(self.tokenizer, self.text_encoder, prompts).to(self.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate ``num_images_per_prompt`` images for each prompt.

        Classifier-free guidance (Ho & Salimans 2022): eps = eps_uncond + s (eps_cond - eps_uncond), both
        predictions from one batched forward; the negative prompt (default: the empty prompt the model was
        trained to know through caption dropout) gives eps_uncond. ``guidance_scale=1`` skips that half;
        None is the pipeline's own (``self.guidance_scale``). ``num_inference_steps`` None: the steps the
        trainer saved (``default_steps``), else 50 as in diffusers' pipelines.
        Pass one generator per image (a list) for images that do not depend on the batch they are in.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        guidance_scale = self.guidance_scale if guidance_scale is None else guidance_scale
        if num_inference_steps is None:
            num_inference_steps = self.config.get("default_steps") or 50
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * len(prompts)
        self._check_arguments(prompts, negatives, num_inference_steps, guidance_scale, num_images_per_prompt, output_type)
        count = len(prompts) * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != count:
            raise ValueError(f"generator: got {len(generator)} generators for {count} images")
        size = self.unet.config.sample_size * self.scale_factor
        height, width = height or size, width or size
        for name, value in (("height", height), ("width", width)):
            if value < self.scale_factor or value % self.scale_factor:
                raise ValueError(f"{name} must be a positive multiple of {self.scale_factor} (the VAE's downscaling), "
                                 f"got {value}")

        repeat = lambda texts: [t for t in texts for _ in range(num_images_per_prompt)]  # noqa: E731
        guided = guidance_scale != 1.0
        context = self.encode(repeat(prompts))
        if guided:
            context = torch.cat([self.encode(repeat(negatives)), context])

        shape = (count, self.unet.config.in_channels, height // self.scale_factor, width // self.scale_factor)
        x = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        x = x * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            noise = self.unet(model_input, t, encoder_hidden_states=context).sample
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            x = self.scheduler.step(noise, t, x, **step_kwargs).prev_sample

        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        images = self.image_processor.postprocess(x.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _check_arguments(self, prompts, negatives, steps, guidance_scale, per_prompt, output_type) -> None:
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt: expected a string or a non-empty list of strings")
        if len(negatives) != len(prompts):
            raise ValueError(f"negative_prompt: {len(negatives)} negative prompts for {len(prompts)} prompts")
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {per_prompt}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def sampling_device(name: str | None = None) -> torch.device:
    """``name`` as a device, or by default the GPU when there is one (CUDA, then Apple's MPS), else the CPU.
    A name that is not a device, or a GPU this torch cannot use, is a ValueError naming it."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    usable = {"cuda": lambda: (device.index or 0) < torch.cuda.device_count(), "mps": torch.backends.mps.is_available}
    if not usable.get(device.type, lambda: True)():
        raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no such GPU")
    return device


LORA_FILE = "pytorch_lora_weights.safetensors"


def load_pipeline(path: str | Path, allow_pickle: bool = False, device: str | None = None, lora: str | None = None,
                  lora_scale: float | None = None) -> NoiseUNetPipeline:
    """A pipeline folder written by ``noiseunet train`` (safetensors only, see ``files.from_pretrained``), on
    ``sampling_device(device)``, with the LoRA file or folder ``lora`` applied at ``lora_scale`` (default 1).

    The folder of a ``--lora-rank`` run holds only its adapters: its base (``--pretrained``) is loaded, then them.
    """
    device = sampling_device(device)  # before loading: a bad name fails at once
    path = Path(path)
    if not (path / "model_index.json").exists() and (path / LORA_FILE).exists():
        config = path / "train_config.json"
        base = json.loads(config.read_text()).get("pretrained") if config.exists() else None
        if not base:
            raise ValueError(f"{path}: LoRA weights without the base pipeline they adapt; pass the base folder "
                             f"and --lora {path / LORA_FILE}")
        path, lora = base, lora or str(path)
    if lora is None and lora_scale is not None:
        raise ValueError("--lora-scale needs --lora (or a folder of a --lora-rank run)")
    pipe = from_pretrained(NoiseUNetPipeline, path, allow_pickle)
    if lora is not None:
        lora_path = Path(lora)
        folder, name = (lora_path.parent, lora_path.name) if lora_path.is_file() else (lora_path, LORA_FILE)
        pipe.load_lora_weights(str(folder), weight_name=name, adapter_name="lora")
        pipe.set_adapters("lora", adapter_weights=1.0 if lora_scale is None else lora_scale)
    return pipe.to(device)


def generate(
    pipe: NoiseUNetPipeline,
    prompts: list[str],
    images_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    negative_prompt: str | None = None,
    precision: str = "auto",
    **call_kwargs,
) -> list[list]:
    """``images_per_prompt`` PIL images for each prompt, in batches of ``batch_size``.

    Image k of every prompt starts from the noise of seed + k, whatever the batching: rows of a grid are
    comparable, and a result is reproduced by its seed alone. The generators are CPU ones (diffusers draws
    on the CPU and moves the noise), so a seed gives the same starting noise on every device.
    ``precision`` ("auto": bf16 where the hardware runs it fast, "no", "bf16", "fp16") is the UNet's
    autocast; on the built-in shapes bf16 gave the same adherence as float32 in half the time.
    """
    jobs = [(prompt, k) for prompt in prompts for k in range(images_per_prompt)]
    images = []
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first:first + batch_size]
        with autocast(pipe.device, precision):
            images += pipe(
                [prompt for prompt, _ in chunk],
                negative_prompt=None if negative_prompt is None else [negative_prompt] * len(chunk),
                generator=[torch.Generator().manual_seed(seed + k) for _, k in chunk],
                output_type="pil",
                **call_kwargs,
            ).images
    return [images[i * images_per_prompt:(i + 1) * images_per_prompt] for i in range(len(prompts))]

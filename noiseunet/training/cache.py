"""What frozen parts compute, computed once: VAE latents of every image and text states of every caption.

A frozen VAE encodes the same image to the same latent distribution every epoch, and a frozen text
encoder maps the same caption to the same states; recomputing them each step is most of a fine-tuning
step's cost at small batch (the declined diffusers caching PR #1936). The cache keeps, per image and side
(the image and its mirror, when ``--random-flip`` is on), the latent distribution's parameters, not one
sample of it: each step still draws its own latent from them with the step's generators, exactly as
``vae.encode(x).latent_dist.sample(generator)`` does, so cached and uncached runs train alike. Random crops
differ every time and cannot be cached: with ``--random-crop`` only the text is. Large latent caches live
in a file (``OUTPUT/cache/latents.bin``, memory-mapped), small ones in memory.
"""

from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from tqdm.auto import tqdm

from ..data.captioned import CaptionedSource, flat_captions
from ..data.transforms import preprocess
from ..text import encode_prompts
from .components import Components
from .config import TrainConfig

IN_MEMORY_BYTES = 2 << 30  # latent caches above this go to a memory-mapped file
ENCODE_BATCH = 16


class FrozenFeatureCache:
    """Latent-distribution parameters per (item, side) and text states per caption."""

    def __init__(self, latent_parameters: torch.Tensor | None, scaling_factor: float,
                 text_states: dict[str, torch.Tensor] | None):
        self.latent_parameters, self.scaling_factor, self.text_states = latent_parameters, scaling_factor, text_states

    def latents(self, batch: dict, generator: list[torch.Generator], device: torch.device) -> torch.Tensor | None:
        """(B, C, h, w) scaled latents drawn with ``generator``, or None when latents are not cached."""
        if self.latent_parameters is None:
            return None
        sides = [int(mirrored) for mirrored in batch["mirrored"]]
        parameters = self.latent_parameters[batch["indices"], sides].to(device)
        return DiagonalGaussianDistribution(parameters).sample(generator) * self.scaling_factor

    def context(self, captions: list[str], device: torch.device) -> torch.Tensor | None:
        """(B, tokens, hidden) text states, or None when the text is not cached."""
        if self.text_states is None:
            return None
        return torch.stack([self.text_states[caption] for caption in captions]).to(device)


def build_cache(config: TrainConfig, parts: Components, source: CaptionedSource | None,
                accelerator: Accelerator) -> FrozenFeatureCache | None:
    """The cache for this run, or None: off with --no-cache, for streams and the endless shapes data
    (``source`` None), and when nothing is frozen."""
    if not config.cache or source is None:
        return None
    cache_latents = parts.vae is not None and not config.random_crop
    cache_text = not parts.train_text_encoder
    if not (cache_latents or cache_text):
        return None
    with torch.no_grad(), accelerator.autocast():
        latents = _latent_parameters(config, parts, source, accelerator) if cache_latents else None
        texts = _text_states(parts, source, accelerator) if cache_text else None
    scaling = parts.vae.config.scaling_factor if parts.vae is not None else 1.0
    return FrozenFeatureCache(latents, scaling, texts)


def _latent_parameters(config: TrainConfig, parts: Components, source: CaptionedSource,
                       accelerator: Accelerator) -> torch.Tensor:
    """(items, sides, 2C, h, w): side 0 the image, side 1 its mirror (when flips are on)."""
    sides = 2 if config.flip else 1
    first = parts.vae.encode(preprocess(source[0]["image"], config.resolution)[None].to(accelerator.device))
    shape = (len(source), sides, *first.latent_dist.parameters.shape[1:])
    dtype = first.latent_dist.parameters.dtype
    size = torch.Size(shape).numel() * dtype.itemsize
    if size > IN_MEMORY_BYTES:
        path = Path(config.output_dir) / "cache" / "latents.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = torch.from_file(str(path), shared=True, size=torch.Size(shape).numel(), dtype=dtype).view(shape)
    else:
        stored = torch.empty(shape, dtype=dtype)
    bar = tqdm(total=len(source), desc="caching VAE latents", unit="image", disable=not accelerator.is_main_process)
    for start in range(0, len(source), ENCODE_BATCH):
        indices = range(start, min(start + ENCODE_BATCH, len(source)))
        pixels = torch.stack([preprocess(source[i]["image"], config.resolution) for i in indices])
        if sides == 2:
            pixels = torch.cat([pixels, pixels.flip(-1)])
        parameters = parts.vae.encode(pixels.to(accelerator.device)).latent_dist.parameters.cpu()
        stored[start:start + len(indices)] = parameters.unflatten(0, (sides, len(indices))).transpose(0, 1)
        bar.update(len(indices))
    bar.close()
    return stored


def _text_states(parts: Components, source: CaptionedSource, accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """Every caption of the data (each alternative of a list) and the empty one, the dropped caption."""
    captions = sorted(set(flat_captions(source.captions(range(len(source))))) | {""})
    states = {}
    for start in range(0, len(captions), 64):
        chunk = captions[start:start + 64]
        encoded = encode_prompts(parts.tokenizer, parts.text_encoder, chunk).cpu()
        states.update(zip(chunk, encoded))
    return states

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

from ..data.batches import BatchSource
from ..data.captioned import CaptionedSource, flat_captions
from ..data.transforms import preprocess
from ..model.patches import latents_are_pixels
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
        parameters = torch.stack([self.latent_parameters[index][int(mirrored)]
                                  for index, mirrored in zip(batch["indices"], batch["mirrored"])]).to(device)
        return DiagonalGaussianDistribution(parameters).sample(generator) * self.scaling_factor

    def context(self, captions: list[str], device: torch.device) -> torch.Tensor | None:
        """(B, tokens, hidden) text states, or None when the text is not cached."""
        if self.text_states is None:
            return None
        return torch.stack([self.text_states[caption] for caption in captions]).to(device)


def build_cache(config: TrainConfig, parts: Components, batches: BatchSource,
                accelerator: Accelerator) -> FrozenFeatureCache | None:
    """The cache for this run, or None: off with --no-cache, for streams and the endless shapes data
    (no ``finite_source``), and when nothing is frozen."""
    source = batches.finite_source()
    if not config.cache or source is None:
        return None
    # Patches of pixels are a reshape: nothing to save by caching them.
    cache_latents = not latents_are_pixels(parts.vae) and not config.random_crop
    cache_text = not parts.train_text_encoder
    if not (cache_latents or cache_text):
        return None
    with torch.no_grad(), accelerator.autocast():
        latents = _latent_parameters(config, parts, source, batches, accelerator) if cache_latents else None
        texts = _text_states(parts, source, accelerator) if cache_text else None
    scaling = parts.vae.config.scaling_factor if parts.vae is not None else 1.0
    return FrozenFeatureCache(latents, scaling, texts)


def _latent_parameters(config: TrainConfig, parts: Components, source: CaptionedSource, batches: BatchSource,
                       accelerator: Accelerator) -> torch.Tensor | list[torch.Tensor]:
    """Per item, (sides, 2C, h, w): side 0 the image, side 1 its mirror (when flips are on). One tensor
    (items, sides, 2C, h, w) when every item has the same size; a list per item in aspect-ratio buckets."""
    sides, count = 2 if config.flip else 1, len(source)
    sizes = [batches.image_size(i) for i in range(count)]
    by_size = {}
    for index, size in enumerate(sizes):
        by_size.setdefault(size, []).append(index)
    first = parts.vae.encode(preprocess(source[0]["image"], sizes[0])[None].to(accelerator.device)).latent_dist
    channels, dtype = first.parameters.shape[1], first.parameters.dtype
    factor = sizes[0][0] // first.parameters.shape[-1]
    if len(by_size) == 1:
        shape = (count, sides, channels, sizes[0][1] // factor, sizes[0][0] // factor)
        stored = _storage(shape, dtype, Path(config.output_dir) / "cache" / "latents.bin")
    else:  # ragged: kept in memory
        stored = [None] * count
    bar = tqdm(total=count, desc="caching VAE latents", unit="image", disable=not accelerator.is_main_process)
    for size, indices in by_size.items():
        for start in range(0, len(indices), ENCODE_BATCH):
            chunk = indices[start:start + ENCODE_BATCH]
            pixels = torch.stack([preprocess(source[i]["image"], size) for i in chunk])
            if sides == 2:
                pixels = torch.cat([pixels, pixels.flip(-1)])
            parameters = parts.vae.encode(pixels.to(accelerator.device)).latent_dist.parameters.cpu()
            for position, index in enumerate(chunk):
                stored[index] = parameters[position::len(chunk)]  # (sides, 2C, h, w)
            bar.update(len(chunk))
    bar.close()
    return stored


def _storage(shape: tuple[int, ...], dtype: torch.dtype, path: Path) -> torch.Tensor:
    """An empty tensor in memory, or memory-mapped from ``path`` when it is larger than IN_MEMORY_BYTES."""
    count = torch.Size(shape).numel()
    if count * dtype.itemsize <= IN_MEMORY_BYTES:
        return torch.empty(shape, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    return torch.from_file(str(path), shared=True, size=count, dtype=dtype).view(shape)


def _text_states(parts: Components, source: CaptionedSource, accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """Every caption of the data (each alternative of a list) and the empty one, the dropped caption."""
    captions = sorted(set(flat_captions(source.captions(range(len(source))))) | {""})
    states = {}
    for start in range(0, len(captions), 64):
        chunk = captions[start:start + 64]
        encoded = encode_prompts(parts.tokenizer, parts.text_encoder, chunk).cpu()
        states.update(zip(chunk, encoded))
    return states

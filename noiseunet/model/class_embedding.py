"""Class conditioning: a label per sample, embedded and combined with the timestep embedding.

Stable Diffusion's x4 upscaler uses it for the noise level it added to the low-resolution image (an integer
label, ``num_class_embeds``); other models feed projected vectors. Every form ends as a (B, time_dim)
vector added to the timestep embedding, or concatenated to it (``class_embeddings_concat``), so the residual
blocks see it exactly as they see the timestep. The kinds and their weight names are diffusers'.
"""

import torch
from torch import nn

from .embeddings import SinusoidalEmbedding, TimestepEmbedding

CLASS_EMBED_TYPES = (None, "timestep", "identity", "projection", "simple_projection")


class TimestepClassEmbedding(TimestepEmbedding):
    """``class_embed_type="timestep"``: labels are numbers like timesteps, embedded the same way."""

    def __init__(self, in_features: int, dim: int, flip_sin_to_cos: bool, freq_shift: float):
        super().__init__(in_features, dim)
        self.features = SinusoidalEmbedding(in_features, flip_sin_to_cos, freq_shift)

    def forward(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return super().forward(self.features(labels).to(dtype))


def build_class_embedding(
    *,
    class_embed_type: str | None,
    num_class_embeds: int | None,
    projection_input_dim: int | None,
    time_channels: int,
    time_dim: int,
    flip_sin_to_cos: bool,
    freq_shift: float,
) -> nn.Module | None:
    """The ``class_embedding`` module diffusers builds for these settings, or None without class conditioning."""
    if class_embed_type not in CLASS_EMBED_TYPES:
        raise ValueError(f"class_embed_type={class_embed_type!r} is not supported; use one of {CLASS_EMBED_TYPES}")
    if class_embed_type is None:
        return nn.Embedding(num_class_embeds, time_dim) if num_class_embeds is not None else None
    if class_embed_type == "timestep":
        return TimestepClassEmbedding(time_channels, time_dim, flip_sin_to_cos, freq_shift)
    if class_embed_type == "identity":
        return nn.Identity()
    if projection_input_dim is None:
        raise ValueError(f"class_embed_type={class_embed_type!r} needs projection_class_embeddings_input_dim")
    if class_embed_type == "projection":
        return TimestepEmbedding(projection_input_dim, time_dim)
    return nn.Linear(projection_input_dim, time_dim)  # simple_projection


def embed_class_labels(embedding: nn.Module, labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(B,) labels or (B, D) vectors -> (B, time_dim) in ``dtype`` (the sample's)."""
    if labels is None:
        raise ValueError("class_labels are required: this model has a class embedding")
    if isinstance(embedding, TimestepClassEmbedding):
        return embedding(labels, dtype).to(dtype)
    return embedding(labels).to(dtype)

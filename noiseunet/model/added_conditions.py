"""Conditions added to the timestep embedding: the pooled text (``addition_embed_type="text"``), and those a
pipeline passes in ``added_cond_kwargs``: SDXL's size/crop conditioning and IP-Adapter images.

``text`` (DeepFloyd IF's pooling, diffusers' ``TextTimeEmbedding``): the text tokens are pooled by one
attention query (their mean plus a learned offset) and projected onto the timestep embedding, so every
residual block, not only the cross-attention layers, hears the whole prompt.

SDXL (Podell et al. 2023) conditions on the pooled text embedding and six numbers: original size, crop
offset and target size. The numbers get sinusoidal features like a timestep, everything is concatenated,
and an MLP (``add_embedding``) maps it to a vector added to the timestep embedding (``text_time``).

An IP-Adapter (Ye et al. 2023) projects image features to extra cross-attention tokens
(``encoder_hid_proj``, installed by ``load_ip_adapter``); its processors attend to them beside the text.

Every key must be used: a condition the model has no place for is an error, not a silently different image.
"""

import torch
from torch import nn

from .embeddings import TimestepEmbedding

ADDITION_EMBED_TYPES = (None, "text", "text_time")


class AttentionPooling(nn.Module):
    """(B, tokens, D) -> (B, D): what a query made of the tokens' mean (plus ``positional_embedding``) reads
    from the tokens and itself, per head; the heads' outputs are concatenated, with no output projection."""

    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(1, dim) / dim**0.5)
        self.k_proj, self.q_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        query_token = tokens.mean(dim=1, keepdim=True) + self.positional_embedding.to(tokens.dtype)
        keys_from = torch.cat([query_token, tokens], dim=1)
        split = lambda x: x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731 (B, heads, n, d)
        q, k, v = split(self.q_proj(query_token)), split(self.k_proj(keys_from)), split(self.v_proj(keys_from))
        weights = torch.softmax((q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).float(), dim=-1).to(q.dtype)
        return (weights @ v).transpose(1, 2).flatten(1)  # (B, 1, heads, d) -> (B, D)


class PooledTextEmbedding(nn.Module):
    """``addition_embed_type="text"``: LayerNorm -> AttentionPooling -> Linear -> LayerNorm, added to the
    timestep embedding (diffusers' names: norm1, pool, proj, norm2)."""

    def __init__(self, text_dim: int, time_dim: int, heads: int) -> None:
        super().__init__()
        if text_dim % heads:
            raise ValueError(f"addition_embed_type='text' pools {text_dim}-wide text with "
                             f"addition_embed_type_num_heads={heads} heads; it must divide the width")
        self.norm1, self.pool = nn.LayerNorm(text_dim), AttentionPooling(heads, text_dim)
        self.proj, self.norm2 = nn.Linear(text_dim, time_dim), nn.LayerNorm(time_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.proj(self.pool(self.norm1(text))))


class TextTimeEmbedding(TimestepEmbedding):
    """SDXL's ``add_embedding``: [pooled text | features of the time ids] -> Linear -> SiLU -> Linear."""

    def forward(self, text_embeds: torch.Tensor, time_features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """text_embeds: (B, D) pooled text; time_features: (B * n, c) sinusoidal features of the n time ids;
        dtype: the timestep embedding's, which the result is added to."""
        time_features = time_features.reshape(text_embeds.shape[0], -1)
        return super().forward(torch.cat([text_embeds, time_features], dim=-1).to(dtype))


def take_added_conditions(
    added_cond_kwargs: dict[str, torch.Tensor] | None, *, text_time: bool, image: bool
) -> dict[str, torch.Tensor]:
    """Check ``added_cond_kwargs`` against what the model uses: SDXL's text_embeds and time_ids when
    ``text_time``, image_embeds when an IP-Adapter is loaded (``image``). Missing or unused keys raise."""
    given = dict(added_cond_kwargs or {})
    needed = (["text_embeds", "time_ids"] if text_time else []) + (["image_embeds"] if image else [])
    missing = [key for key in needed if key not in given]
    if missing:
        raise ValueError(f"added_cond_kwargs must contain {missing}: the model's configuration uses them")
    unused = sorted(set(given) - set(needed))
    if unused:
        raise ValueError(f"added_cond_kwargs {unused} are not used by this model (addition_embed_type, "
                         f"IP-Adapter); refusing to ignore them")
    return given

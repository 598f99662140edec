"""Conditions a pipeline passes in ``added_cond_kwargs``: SDXL's size/crop conditioning and IP-Adapter images.

SDXL (Podell et al. 2023) conditions on the pooled text embedding and six numbers: original size, crop
offset and target size. The numbers get sinusoidal features like a timestep, everything is concatenated,
and an MLP (``add_embedding``) maps it to a vector added to the timestep embedding (``text_time``).

An IP-Adapter (Ye et al. 2023) projects image features to extra cross-attention tokens
(``encoder_hid_proj``, installed by ``load_ip_adapter``); its processors attend to them beside the text.

Every key must be used: a condition the model has no place for is an error, not a silently different image.
"""

import torch

from .embeddings import TimestepEmbedding

ADDITION_EMBED_TYPES = (None, "text_time")


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

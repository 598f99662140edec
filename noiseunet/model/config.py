"""Reading diffusers' per-level config values into one settings record per level.

diffusers lets most attention settings be one value for every level or a tuple with one per level, and
``transformer_layers_per_block`` even one value per residual block of a level (SDXL-style asymmetric
UNets, whose decoder then needs ``reverse_transformer_layers_per_block``). This module turns all of that
into plain per-level lists, checked once, so the UNet itself never branches on the config's shape.
"""

from collections.abc import Sequence
from dataclasses import dataclass

# diffusers' block names, read from configs only to know which levels attend to the text.
ATTENTION_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
ATTENTION_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"

PerLevel = int | bool | Sequence


@dataclass
class Level:
    """One resolution level's settings; the decoder mirror of encoder level i has the same except
    ``up_transformer_layers`` and one more residual block."""

    width: int
    layers: int  # residual blocks of the encoder level
    attends: bool  # whether its blocks are followed by SpatialTransformers
    heads: int
    context_dim: int  # width of the text features its cross-attention reads
    only_cross_attention: bool
    down_transformer_layers: list[int]  # per residual block of the encoder level
    up_transformer_layers: list[int]  # per residual block of the decoder level


def per_level(value: PerLevel, levels: int, name: str) -> list:
    """One value per level, from a single value or a per-level sequence of the right length."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * levels
    if len(values) != levels:
        raise ValueError(f"{name} has {len(values)} entries but block_out_channels has {levels} levels")
    return values


def per_block(value: int | Sequence[int], blocks: int, name: str) -> list[int]:
    """One value per residual block of a level (diffusers reads the first ``blocks`` of a longer list)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * blocks
    if len(values) < blocks:
        raise ValueError(f"{name}: a level with {blocks} blocks got {len(values)} values {values}")
    return values[:blocks]


def attending_levels(down_block_types: Sequence[str], up_block_types: Sequence[str], levels: int) -> list[bool]:
    down_names, up_names = {ATTENTION_DOWN: True, PLAIN_DOWN: False}, {ATTENTION_UP: True, PLAIN_UP: False}
    for name in down_block_types:
        if name not in down_names:
            raise ValueError(f"down_block_types: unsupported block {name!r}; use {ATTENTION_DOWN!r} or {PLAIN_DOWN!r}")
    for name in up_block_types:
        if name not in up_names:
            raise ValueError(f"up_block_types: unsupported block {name!r}; use {ATTENTION_UP!r} or {PLAIN_UP!r}")
    attends = [down_names[name] for name in down_block_types]
    if len(attends) != levels or [up_names[name] for name in up_block_types] != attends[::-1]:
        raise ValueError(f"down_block_types/up_block_types must name {levels} levels and mirror each other, "
                         f"got {list(down_block_types)} / {list(up_block_types)}")
    return attends


def level_settings(
    *,
    block_out_channels: Sequence[int],
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    layers_per_block: PerLevel,
    attention_head_dim: PerLevel,
    cross_attention_dim: PerLevel,
    only_cross_attention: PerLevel,
    transformer_layers_per_block: PerLevel,
    reverse_transformer_layers_per_block: Sequence | None,
    norm_num_groups: int,
) -> list[Level]:
    """Per-level settings, top to bottom, with the errors diffusers would raise (and a few it would not)."""
    levels = len(block_out_channels)
    attends = attending_levels(down_block_types, up_block_types, levels)
    layers = per_level(layers_per_block, levels, "layers_per_block")
    heads = per_level(attention_head_dim, levels, "attention_head_dim")
    context = per_level(cross_attention_dim, levels, "cross_attention_dim")
    only_cross = per_level(only_cross_attention, levels, "only_cross_attention")
    down_layers = per_level(transformer_layers_per_block, levels, "transformer_layers_per_block")
    if reverse_transformer_layers_per_block is None:
        if any(isinstance(v, (list, tuple)) for v in down_layers):
            raise ValueError("transformer_layers_per_block with per-block lists needs "
                             "reverse_transformer_layers_per_block for the decoder")
        up_layers = down_layers  # the decoder mirrors the encoder
    else:
        up_layers = per_level(reverse_transformer_layers_per_block, levels, "reverse_transformer_layers_per_block")
        up_layers = up_layers[::-1]  # given in decoder order (bottom to top); stored per level, top to bottom

    settings = []
    for i, width in enumerate(block_out_channels):
        if width % norm_num_groups or width % heads[i]:
            raise ValueError(f"block width {width} must be divisible by norm_num_groups={norm_num_groups} "
                             f"and by its number of heads {heads[i]}")
        settings.append(Level(
            width=width, layers=layers[i], attends=attends[i], heads=heads[i], context_dim=context[i],
            only_cross_attention=bool(only_cross[i]),
            down_transformer_layers=per_block(down_layers[i], layers[i], "transformer_layers_per_block"),
            up_transformer_layers=per_block(up_layers[i], layers[i] + 1, "reverse_transformer_layers_per_block"),
        ))
    return settings

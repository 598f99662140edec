"""NoiseUNet: the text-conditioned noise predictor of Stable Diffusion, readable top to bottom.

    timestep ─► sinusoidal ─► MLP ───────────────────────────── emb (into every ResnetBlock)
    x_t ─► conv_in ─► DownBlock × L ─► MidBlock ─► UpBlock × L ─► GroupNorm, SiLU, conv_out ─► predicted noise
                        │  skips (every intermediate output)  ▲
                        └──────────── concatenated ───────────┘
    text features ─► cross-attention inside every SpatialTransformer

Module and parameter names follow diffusers' ``UNet2DConditionModel`` (down_blocks.0.resnets.0.conv1, ...),
so a Stable Diffusion 1.x/2.x UNet state dict loads as it is, diffusers' config files are read as they
are, and LoRA adapters target the same ``to_q``/``to_k``/``to_v``/``to_out.0`` layers.
"""

from functools import partial
from typing import Any, Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from diffusers.utils.peft_utils import apply_lora_scale
from torch import nn

from .attention import SpatialTransformer
from .embeddings import TimestepEmbedding, sinusoidal_embedding
from .resnet import Downsample, ResnetBlock, Upsample

# diffusers' block names, read from configs only to know which levels attend to the text.
ATTENTION_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
ATTENTION_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"

ResnetFactory = Callable[[int, int], ResnetBlock]
AttentionFactory = Callable[[int, int, int], SpatialTransformer]


class DownBlock(nn.Module):
    """One encoder level: residual blocks (each followed by a SpatialTransformer when the level attends),
    then a stride-2 downsampling. Every intermediate output is returned as a skip connection."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        make_resnet: ResnetFactory,
        make_attention: AttentionFactory | None,
        heads: int,
        transformer_layers: int,
        downsample: bool,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            make_resnet(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        self.attentions = None
        if make_attention is not None:
            self.attentions = nn.ModuleList(
                make_attention(out_channels, heads, transformer_layers) for _ in range(num_layers)
            )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, x, emb, context, self_bias, cross_bias) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context, self_bias, cross_bias)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """The bottleneck at the lowest resolution: residual block, SpatialTransformer, residual block."""

    def __init__(self, channels: int, make_resnet: ResnetFactory, make_attention: AttentionFactory, heads: int, transformer_layers: int):
        super().__init__()
        self.resnets = nn.ModuleList([make_resnet(channels, channels), make_resnet(channels, channels)])
        self.attentions = nn.ModuleList([make_attention(channels, heads, transformer_layers)])

    def forward(self, x, emb, context, self_bias, cross_bias) -> torch.Tensor:
        x = self.resnets[0](x, emb)
        x = self.attentions[0](x, context, self_bias, cross_bias)
        return self.resnets[1](x, emb)


class UpBlock(nn.Module):
    """One decoder level: each residual block first concatenates the matching encoder skip (the UNet's
    defining connection, Ronneberger et al. 2015), then nearest upsampling + conv to the next skip's size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        skip_channels: list[int],
        make_resnet: ResnetFactory,
        make_attention: AttentionFactory | None,
        heads: int,
        transformer_layers: int,
        upsample: bool,
        make_upsample: Callable[[int], nn.Module] = Upsample,
    ):
        super().__init__()
        channels = [in_channels] + [out_channels] * (len(skip_channels) - 1)
        self.resnets = nn.ModuleList(make_resnet(c + s, out_channels) for c, s in zip(channels, skip_channels))
        self.attentions = None
        if make_attention is not None:
            self.attentions = nn.ModuleList(
                make_attention(out_channels, heads, transformer_layers) for _ in skip_channels
            )
        self.upsamplers = nn.ModuleList([make_upsample(out_channels)]) if upsample else None

    def forward(self, x, emb, skips: list[torch.Tensor], context, self_bias, cross_bias, size=None) -> torch.Tensor:
        """``skips`` are consumed from the end (deepest first); ``size`` is where to upsample to."""
        for i, (resnet, skip) in enumerate(zip(self.resnets, reversed(skips))):
            x = resnet(torch.cat([x, skip], dim=1), emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context, self_bias, cross_bias)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, size)
        return x


def _per_level(value: int | tuple[int, ...] | list[int], levels: int, name: str) -> list[int]:
    values = [value] * levels if isinstance(value, int) else list(value)
    if len(values) != levels:
        raise ValueError(f"{name} has {len(values)} entries but block_out_channels has {levels} levels")
    return values


class NoiseUNet(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Predicts the noise in x_t given the timestep t and text features; a drop-in ``UNet2DConditionModel``.

    The config uses diffusers' names, so ``NoiseUNet.from_config(sd_unet.config)`` builds the same network
    and ``NoiseUNet.from_pretrained(sd_repo, subfolder="unet")`` loads Stable Diffusion 1.x/2.x weights.

    Args:
        sample_size: nominal height/width of x_t (pipelines read it); any size works at run time.
        in_channels, out_channels: channels of x_t and of the prediction (3 for pixels, 4 for SD latents).
        block_out_channels: width of each resolution level, top to bottom.
        down_block_types: per level, "CrossAttnDownBlock2D" (attends to the text) or "DownBlock2D" (does not).
        up_block_types: the mirror image, "CrossAttnUpBlock2D" / "UpBlock2D", bottom to top.
        layers_per_block: residual blocks per encoder level (the decoder has one more, for the extra skip).
        attention_head_dim: number of attention heads per level. The name is diffusers' (historically
            misnamed there too); SD 1.x uses 8, SD 2.x (5, 10, 20, 20).
        transformer_layers_per_block: transformer layers inside each SpatialTransformer, per level.
        cross_attention_dim: width of the text features (CLIP's hidden size: 768 in SD 1.x, 1024 in 2.x).
        use_linear_projection: linear proj_in/proj_out (SD 2.x) instead of 1x1 convolutions (SD 1.x).
        norm_num_groups, norm_eps: GroupNorm of the residual blocks and the output.
        flip_sin_to_cos, freq_shift: layout of the sinusoidal timestep features.
        dropout: dropout inside residual blocks and attention.
        upcast_attention: kept for SD 2.1 configs; attention is computed by PyTorch's SDPA, whose softmax
            already accumulates in float32.
        time_cond_proj_dim: always None (no LCM-style timestep conditioning); pipelines read it.
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        down_block_types: tuple[str, ...] = (PLAIN_DOWN, ATTENTION_DOWN, ATTENTION_DOWN),
        up_block_types: tuple[str, ...] = (ATTENTION_UP, ATTENTION_UP, PLAIN_UP),
        layers_per_block: int = 1,
        attention_head_dim: int | tuple[int, ...] = 4,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        cross_attention_dim: int = 256,
        use_linear_projection: bool = False,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        dropout: float = 0.0,
        upcast_attention: bool = False,
        time_cond_proj_dim: int | None = None,
    ):
        super().__init__()
        levels = len(block_out_channels)
        attends = self._attending_levels(down_block_types, up_block_types, levels)
        heads = _per_level(attention_head_dim, levels, "attention_head_dim")
        transformer_layers = _per_level(transformer_layers_per_block, levels, "transformer_layers_per_block")
        if time_cond_proj_dim is not None:
            raise ValueError("time_cond_proj_dim is not supported by NoiseUNet (leave it None)")
        for width, n_heads in zip(block_out_channels, heads):
            if width % norm_num_groups or width % n_heads:
                raise ValueError(f"block width {width} must be divisible by norm_num_groups={norm_num_groups} "
                                 f"and by its number of heads {n_heads}")

        time_dim = block_out_channels[0] * 4
        make_resnet = partial(ResnetBlock, time_dim=time_dim, groups=norm_num_groups, eps=norm_eps, dropout=dropout)
        make_attention = partial(
            SpatialTransformer, context_dim=cross_attention_dim, groups=norm_num_groups,
            use_linear_projection=use_linear_projection, dropout=dropout,
        )

        # Timestep embedding.
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_dim)

        # Encoder; skip_channels records the width of every tensor the decoder will concatenate.
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        skip_channels = [block_out_channels[0]]
        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for level, width in enumerate(block_out_channels):
            last = level == levels - 1
            self.down_blocks.append(DownBlock(
                channels, width, layers_per_block, make_resnet, make_attention if attends[level] else None,
                heads[level], transformer_layers[level], downsample=not last,
            ))
            skip_channels += [width] * (layers_per_block + (0 if last else 1))
            channels = width

        # Middle.
        self.mid_block = MidBlock(channels, make_resnet, make_attention, heads[-1], transformer_layers[-1])

        # Decoder, mirrored: level i of the decoder meets encoder level L-1-i through its skips.
        self.up_blocks = nn.ModuleList()
        for level, width in enumerate(reversed(block_out_channels)):
            mirror = levels - 1 - level
            skips = [skip_channels.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(UpBlock(
                channels, width, skips, make_resnet, make_attention if attends[mirror] else None,
                heads[mirror], transformer_layers[mirror], upsample=level < levels - 1,
            ))
            channels = width

        # Output.
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)
        self.gradient_checkpointing = False

    @staticmethod
    def _attending_levels(down_block_types, up_block_types, levels: int) -> list[bool]:
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

    @apply_lora_scale("cross_attention_kwargs")
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """Predict the noise (or v) in ``sample`` (B, C, H, W) at ``timestep`` given ``encoder_hidden_states``
        (B, tokens, cross_attention_dim), with diffusers' signature and output.

        ``encoder_attention_mask`` (B, tokens), 1 = keep, hides padded text tokens from cross-attention;
        ``attention_mask`` (B, H*W) does the same for self-attention keys. ``encoder_hidden_states=None``
        runs the model unconditionally (no cross-attention term). ``class_labels``, ``timestep_cond`` and
        ``added_cond_kwargs`` belong to model variants NoiseUNet does not implement and are ignored, as
        diffusers ignores them when the config has no such embedding.
        """
        # Timestep -> (B, time_dim) embedding.
        timesteps = self._timesteps_for_batch(timestep, sample)
        features = sinusoidal_embedding(
            timesteps, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift
        )
        emb = self.time_embedding(features.to(sample.dtype))

        # Masks (1 = keep) -> additive attention biases, as diffusers does.
        self_bias = None if attention_mask is None else ((1 - attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        cross_bias = None
        if encoder_attention_mask is not None:
            cross_bias = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        context = encoder_hidden_states

        # Encoder.
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = self._run(block, x, emb, context, self_bias, cross_bias)
            skips += block_skips

        # Middle.
        x = self._run(self.mid_block, x, emb, context, self_bias, cross_bias)

        # Decoder with skip connections.
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[-2:] if skips else None
            x = self._run(block, x, emb, block_skips, context, self_bias, cross_bias, size)

        # Output.
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return UNet2DConditionOutput(sample=x) if return_dict else (x,)

    @staticmethod
    def _timesteps_for_batch(timestep: torch.Tensor | float | int, sample: torch.Tensor) -> torch.Tensor:
        """int, float, 0-d or (B,) timestep -> (B,) tensor on the sample's device."""
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.float64 if isinstance(timestep, float) else torch.int64)
        timestep = timestep.to(sample.device).reshape(-1)
        return timestep.expand(sample.shape[0])

    def _run(self, block: nn.Module, *args):
        """Call a block, recomputing its activations during backward when gradient checkpointing is on."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """Refuse diffusers configs of UNet variants this class does not build (from_config, from_pretrained)."""
        from .diffusers_compat import check_supported_config

        check_supported_config(config_dict)
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def from_diffusers(cls, unet: nn.Module) -> "NoiseUNet":
        """The same network with the same weights as a diffusers ``UNet2DConditionModel`` (SD 1.x/2.x family)."""
        from .diffusers_compat import noiseunet_from_diffusers

        return noiseunet_from_diffusers(cls, unet)

    def to_diffusers(self) -> nn.Module:
        """A diffusers ``UNet2DConditionModel`` with this network's weights."""
        from .diffusers_compat import diffusers_from_noiseunet

        return diffusers_from_noiseunet(self)

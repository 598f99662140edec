"""NoiseUNet: the text-conditioned noise predictor of Stable Diffusion, readable top to bottom.

    timestep ─► sinusoidal ─► MLP ─(+ class labels, + SDXL sizes)── emb (into every ResnetBlock)
    x_t ─► conv_in ─► DownBlock × L ─► MidBlock ─► UpBlock × L ─► GroupNorm, SiLU, conv_out ─► predicted noise
                        │  skips (every intermediate output)  ▲
                        └──────────── concatenated ───────────┘
    text features ─► cross-attention inside every SpatialTransformer
    ControlNet / T2I-Adapter residuals ─► added to the skips, inside the DownBlocks and after the MidBlock

Module and parameter names follow diffusers' ``UNet2DConditionModel`` (down_blocks.0.resnets.0.conv1, ...),
so a Stable Diffusion 1.x/2.x/XL UNet state dict loads as it is, diffusers' config files are read as they
are, and LoRA adapters target the same ``to_q``/``to_k``/``to_v``/``to_out.0`` layers. The conditioning
variants live in their own modules (class_embedding.py, added_conditions.py, residuals.py), and
docs/diffusers-compat.md lists what is built and what is refused.
"""

from dataclasses import replace
from functools import partial
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin, UNet2DConditionLoadersMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from diffusers.utils.peft_utils import apply_lora_scale
from torch import nn

from .added_conditions import ADDITION_EMBED_TYPES, PooledTextEmbedding, TextTimeEmbedding, take_added_conditions
from .attention import Conditioning, SpatialTransformer
from .attention_processors import AttentionProcessorsMixin
from .blocks import AttentionFactory, DownBlock, MidBlock, UpBlock  # noqa: F401 (DownBlock, UpBlock: re-exported)
from .class_embedding import build_class_embedding, embed_class_labels
from .config import ATTENTION_DOWN, ATTENTION_UP, PLAIN_DOWN, PLAIN_UP, Level, level_settings
from .embeddings import SinusoidalEmbedding, TimestepEmbedding
from .levels import build_levels
from .residuals import SideResiduals
from .resnet import ResnetBlock

RESNET_TIME_SCALE_SHIFTS = ("default", "scale_shift")


class NoiseUNet(
    ModelMixin, AttentionProcessorsMixin, AttentionMixin, ConfigMixin, UNet2DConditionLoadersMixin, PeftAdapterMixin
):
    """Predicts the noise in x_t given the timestep t and text features; a drop-in ``UNet2DConditionModel``.

    The config uses diffusers' names, so ``NoiseUNet.from_config(sd_unet.config)`` builds the same network
    and ``NoiseUNet.from_pretrained(sd_repo, subfolder="unet")`` loads Stable Diffusion 1.x/2.x/XL weights.
    Keys a setting may give per level accept one value or a tuple with one per level.

    Args:
        sample_size: nominal height/width of x_t (pipelines read it); any size works at run time.
        in_channels, out_channels: channels of x_t and of the prediction (3 for pixels, 4 for SD latents).
        block_out_channels: width of each resolution level, top to bottom.
        down_block_types: per level, "CrossAttnDownBlock2D" (attends to the text) or "DownBlock2D" (does not).
        up_block_types: the mirror image, "CrossAttnUpBlock2D" / "UpBlock2D", bottom to top.
        layers_per_block: residual blocks per encoder level (the decoder has one more, for the extra skip).
        attention_head_dim: number of attention heads (per level). The name is diffusers' (historically
            misnamed there too); SD 1.x uses 8, SD 2.x (5, 10, 20, 20).
        transformer_layers_per_block: transformer layers inside each SpatialTransformer (per level, or per
            residual block of a level); reverse_transformer_layers_per_block: the decoder's, bottom to top,
            when it differs from the mirror of the encoder's.
        cross_attention_dim: width of the text features (per level): 768 in SD 1.x, 1024 in 2.x, 2048 in XL.
        only_cross_attention: (per level) the first attention of each transformer layer reads the text too.
        use_linear_projection: linear proj_in/proj_out (SD 2.x) instead of 1x1 convolutions (SD 1.x).
        norm_num_groups, norm_eps: GroupNorm of the residual blocks and the output.
        flip_sin_to_cos, freq_shift: layout of the sinusoidal timestep features.
        dropout: dropout inside residual blocks and attention.
        upcast_attention: SD 2.1's flag, passed to diffusers' attention processors; NoiseUNet's own
            processor computes attention with PyTorch's SDPA, whose softmax already accumulates in float32.
        time_cond_proj_dim: width of LCM's ``timestep_cond`` (the guidance-scale embedding), or None.
        class_embed_type, num_class_embeds, projection_class_embeddings_input_dim, class_embeddings_concat:
            class conditioning (``class_labels``), see class_embedding.py.
        addition_embed_type, addition_time_embed_dim: SDXL's "text_time" conditions (``added_cond_kwargs``),
            see added_conditions.py; projection_class_embeddings_input_dim is then their total width. "text":
            the text tokens pooled by attention (addition_embed_type_num_heads heads) onto the timestep embedding.
        resnet_time_scale_shift: how the timestep embedding enters each residual block: "default" adds it
            (Stable Diffusion), "scale_shift" scales and shifts the normalised features with it (AdaGN).

    diffusers config keys for variants NoiseUNet does not build are not arguments: ``from_config`` refuses
    a config that sets them (diffusers_compat.py), and the config records the values this network has.
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
        layers_per_block: int | tuple[int, ...] = 1,
        attention_head_dim: int | tuple[int, ...] = 4,
        transformer_layers_per_block: int | tuple = 1,
        reverse_transformer_layers_per_block: tuple | None = None,
        cross_attention_dim: int | tuple[int, ...] = 256,
        only_cross_attention: bool | tuple[bool, ...] = False,
        use_linear_projection: bool = False,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        dropout: float = 0.0,
        upcast_attention: bool | None = False,
        time_cond_proj_dim: int | None = None,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        projection_class_embeddings_input_dim: int | None = None,
        class_embeddings_concat: bool = False,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        addition_embed_type_num_heads: int = 64,
        resnet_time_scale_shift: str = "default",
    ):
        super().__init__()
        levels = level_settings(
            block_out_channels=block_out_channels, down_block_types=down_block_types, up_block_types=up_block_types,
            layers_per_block=layers_per_block, attention_head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim, only_cross_attention=only_cross_attention,
            transformer_layers_per_block=transformer_layers_per_block,
            reverse_transformer_layers_per_block=reverse_transformer_layers_per_block, norm_num_groups=norm_num_groups,
        )
        if addition_embed_type not in ADDITION_EMBED_TYPES:
            raise ValueError(f"addition_embed_type={addition_embed_type!r} is not supported; "
                             f"use one of {ADDITION_EMBED_TYPES}")
        if addition_embed_type == "text_time" and not (addition_time_embed_dim and projection_class_embeddings_input_dim):
            raise ValueError("addition_embed_type='text_time' needs addition_time_embed_dim and "
                             "projection_class_embeddings_input_dim")

        if resnet_time_scale_shift not in RESNET_TIME_SCALE_SHIFTS:
            raise ValueError(f"resnet_time_scale_shift={resnet_time_scale_shift!r} is not supported; "
                             f"use one of {RESNET_TIME_SCALE_SHIFTS}")

        time_channels, time_dim = block_out_channels[0], block_out_channels[0] * 4
        make_resnet = partial(ResnetBlock, time_dim=time_dim * 2 if class_embeddings_concat else time_dim,
                              groups=norm_num_groups, eps=norm_eps, dropout=dropout,
                              scale_shift=resnet_time_scale_shift == "scale_shift")
        make_attention = partial(SpatialTransformer, groups=norm_num_groups, use_linear_projection=use_linear_projection,
                                 dropout=dropout, upcast_attention=bool(upcast_attention))

        # Timestep embedding, and the conditions added to it: class labels, SDXL's text_time.
        self.time_proj = SinusoidalEmbedding(time_channels, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(time_channels, time_dim, cond_dim=time_cond_proj_dim)
        self.class_embedding = build_class_embedding(
            class_embed_type=class_embed_type, num_class_embeds=num_class_embeds,
            projection_input_dim=projection_class_embeddings_input_dim, time_channels=time_channels,
            time_dim=time_dim, flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift,
        )
        self.add_time_proj = self.add_embedding = None
        if addition_embed_type == "text_time":
            self.add_time_proj = SinusoidalEmbedding(addition_time_embed_dim, flip_sin_to_cos, freq_shift)
            self.add_embedding = TextTimeEmbedding(projection_class_embeddings_input_dim, time_dim)
        elif addition_embed_type == "text":
            if not isinstance(cross_attention_dim, int):
                raise ValueError("addition_embed_type='text' pools the text tokens: cross_attention_dim must be "
                                 f"one width, got {cross_attention_dim}")
            self.add_embedding = PooledTextEmbedding(cross_attention_dim, time_dim, addition_embed_type_num_heads)
        self.encoder_hid_proj = None  # an IP-Adapter's image projection, installed by load_ip_adapter

        # Encoder and decoder with their skips, and the middle.
        self.conv_in = nn.Conv2d(in_channels, time_channels, 3, padding=1)
        self.down_blocks, self.up_blocks = build_levels(
            in_channels=time_channels, widths=block_out_channels, layers=[level.layers for level in levels],
            make_resnet=make_resnet,
            down_attention=[self._attention(make_attention, level, level.down_transformer_layers) for level in levels],
            up_attention=[self._attention(make_attention, level, level.up_transformer_layers) for level in levels[::-1]],
        )
        bottom = levels[-1]
        middle = replace(bottom, attends=True, only_cross_attention=False)  # diffusers' mid block always attends
        self.mid_block = MidBlock(channels=bottom.width, make_resnet=make_resnet,
                                  make_attention=self._attention(make_attention, middle, bottom.down_transformer_layers))

        # Output.
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, time_channels, eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(time_channels, out_channels, 3, padding=1)
        self.gradient_checkpointing = False

        # What this network is in diffusers' terms, for pipelines and ControlNetModel.from_unet to read.
        from .diffusers_compat import FIXED_DIFFUSERS_SETTINGS

        self.register_to_config(_class_name=type(self).__name__, **FIXED_DIFFUSERS_SETTINGS)

    @staticmethod
    def _attention(make_attention, level: Level, transformer_layers: list[int]) -> AttentionFactory | None:
        """The level's SpatialTransformer factory: (channels, block index) -> SpatialTransformer."""
        if not level.attends:
            return None
        return lambda channels, i: make_attention(
            channels, level.heads, transformer_layers[i], level.context_dim, only_cross_attention=level.only_cross_attention
        )

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
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """Predict the noise (or v) in ``sample`` (B, C, H, W) at ``timestep`` given ``encoder_hidden_states``
        (B, tokens, cross_attention_dim), with diffusers' signature, numerics and output.

        ``encoder_attention_mask`` (B, tokens), 1 = keep, hides padded text tokens from cross-attention;
        ``attention_mask`` (B, H*W) does the same for self-attention keys. ``encoder_hidden_states=None``
        runs the model unconditionally (no cross-attention term). ``class_labels`` (class_embedding.py),
        ``timestep_cond`` (LCM), ``added_cond_kwargs`` (added_conditions.py) and the ControlNet/T2I-Adapter
        residuals (residuals.py) are used as diffusers uses them; one the model has no place for raises.
        """
        added = take_added_conditions(added_cond_kwargs, text_time=self.add_time_proj is not None,
                                      image=self.encoder_hid_proj is not None)
        emb = self._embed(sample, timestep, class_labels, timestep_cond, added, encoder_hidden_states)
        cond = self._conditioning(sample, encoder_hidden_states, added, attention_mask, encoder_attention_mask,
                                  cross_attention_kwargs)
        residuals = SideResiduals(down_block_additional_residuals, mid_block_additional_residual,
                                  down_intrablock_additional_residuals)

        # Encoder.
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = self._run(block, x, emb, cond, residuals.next_adapter_residual())
            skips += block_skips
        skips = residuals.add_to_skips(skips)

        # Middle.
        x = residuals.add_to_middle(self._run(self.mid_block, x, emb, cond))

        # Decoder with skip connections.
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[-2:] if skips else None
            x = self._run(block, x, emb, block_skips, cond, size)

        # Output.
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return UNet2DConditionOutput(sample=x) if return_dict else (x,)

    def _embed(self, sample, timestep, class_labels, timestep_cond, added: dict[str, torch.Tensor],
               text: torch.Tensor | None) -> torch.Tensor:
        """The (B, time_dim) embedding every residual block reads: timestep, plus class, pooled-text and SDXL
        conditions."""
        features = self.time_proj(self._timesteps_for_batch(timestep, sample)).to(sample.dtype)
        emb = self.time_embedding(features, timestep_cond)
        if self.class_embedding is not None:
            class_emb = embed_class_labels(self.class_embedding, class_labels, sample.dtype)
            emb = torch.cat([emb, class_emb], dim=-1) if self.config.class_embeddings_concat else emb + class_emb
        elif class_labels is not None:
            raise ValueError("class_labels were given but this model has no class embedding "
                             "(num_class_embeds / class_embed_type)")
        if self.add_time_proj is not None:
            time_features = self.add_time_proj(added["time_ids"].flatten())
            emb = emb + self.add_embedding(added["text_embeds"], time_features, emb.dtype)
        elif self.add_embedding is not None:
            if text is None:
                raise ValueError("addition_embed_type='text' conditions on the text: encoder_hidden_states is needed")
            emb = emb + self.add_embedding(text)
        return emb

    def _conditioning(self, sample, encoder_hidden_states, added, attention_mask, encoder_attention_mask,
                      cross_attention_kwargs) -> Conditioning:
        """What the attention layers read: text (and IP-Adapter image) tokens, masks as additive biases."""
        context = encoder_hidden_states
        if self.encoder_hid_proj is not None:
            context = (context, self.encoder_hid_proj(added["image_embeds"]))
        # Masks (1 = keep) -> additive attention biases, as diffusers does.
        self_bias = None if attention_mask is None else ((1 - attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        cross_bias = None
        if encoder_attention_mask is not None:
            cross_bias = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        if cross_attention_kwargs:
            self.check_attention_kwargs(cross_attention_kwargs)
        return Conditioning(context, self_bias, cross_bias, cross_attention_kwargs or None)

    def enable_freeu(self, s1: float, s2: float, b1: float, b2: float) -> None:
        """FreeU (see UpBlock): skips of the two deepest decoder levels damped by s1, s2, their backbone
        channels amplified by b1, b2. As in diffusers, a zero factor leaves FreeU off."""
        for block in self.up_blocks:
            block.freeu = dict(s1=s1, s2=s2, b1=b1, b2=b2) if all((s1, s2, b1, b2)) else None

    def disable_freeu(self) -> None:
        for block in self.up_blocks:
            block.freeu = None

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
        """from_config, from_pretrained: refuse diffusers configs of variants this class does not build, and
        fill what a diffusers config leaves to defaults with diffusers' defaults."""
        from .diffusers_compat import prepare_config

        init_keys = set(cls._get_init_keys(cls)) - {"self"}
        return super().extract_init_dict(prepare_config(config_dict, init_keys), **kwargs)

    @classmethod
    def from_diffusers(cls, unet: nn.Module) -> "NoiseUNet":
        """The same network with the same weights as a diffusers ``UNet2DConditionModel``."""
        from .diffusers_compat import noiseunet_from_diffusers

        return noiseunet_from_diffusers(cls, unet)

    def to_diffusers(self) -> nn.Module:
        """A diffusers ``UNet2DConditionModel`` with this network's weights."""
        from .diffusers_compat import diffusers_from_noiseunet

        return diffusers_from_noiseunet(self)

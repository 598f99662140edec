"""Attention: how image tokens look at each other (self) and at the text (cross).

A spatial transformer (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models") flattens a feature map into H*W tokens and runs transformer layers over them. In each layer,
self-attention mixes image tokens; cross-attention takes its queries from the image tokens and its
keys/values from the text encoder's features, which is the only place the prompt enters the UNet.
"""

import inspect
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention as DiffusersAttention
from torch import nn

# Up to this many query x key scores per head, bf16 attention on the CPU materialises the scores (see attention).
SHORT_ATTENTION_SCORES = 512 * 512


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over (B, heads, tokens, d) tensors.

    This is exactly what ``F.scaled_dot_product_attention`` computes. On CUDA, and for long sequences, its
    fused kernels are the fast and memory-lean choice. On the CPU in bf16, though, its flash kernel (made
    for long sequences) is 2-4x slower, backward included, than two batched matmuls and a softmax for the
    few hundred tokens of a small latent, so there the scores are simply materialised: at 256 tokens they
    are a few MB. Other dtypes keep SDPA: in float32 it is not slower, and it is what diffusers runs.
    """
    short = q.shape[-2] * k.shape[-2] <= SHORT_ATTENTION_SCORES
    if q.device.type != "cpu" or q.dtype != torch.bfloat16 or not short:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # scale the (tokens, d) side, not the scores
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v  # the CPU softmax accumulates in float32 whatever the input dtype


class NoiseUNetAttnProcessor:
    """NoiseUNet's default attention processor: diffusers' processor protocol around ``attention()`` above.

    It is what every Attention layer runs unless a diffusers processor is set (IP-Adapter, sliced, fused,
    Custom Diffusion, ...), and it stays the default because it is the fast path on bf16 CPUs.
    """

    def __call__(
        self,
        attn: "Attention",
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states: (B, N, query_dim) queries; encoder_hidden_states: (B, M, context_dim) keys/values
        (hidden_states itself when None); attention_mask: additive (B, 1, M) scores, -10000 on masked keys."""
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        q, k, v = (t.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, heads, tokens, d)
        bias = None if attention_mask is None else attention_mask.to(q.dtype).unsqueeze(1)  # over heads, queries
        out = self.attend(q, k, v, bias)
        out = out.transpose(1, 2).flatten(2)
        return attn.to_out[1](attn.to_out[0](out))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The attention itself over (B, heads, tokens, d); a subclass may also keep its probabilities."""
        return attention(q, k, v, bias)


class Attention(DiffusersAttention):
    """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0), so PEFT LoRA adapters
    and Stable Diffusion checkpoints address the same weights.

    It *is* diffusers' ``Attention`` module, so every diffusers attention processor (the ones IP-Adapter,
    attention slicing, QKV fusion and Custom Diffusion install) runs on it unchanged; only the default
    processor is NoiseUNet's own.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        upcast_attention: bool = False,
    ):
        super().__init__(
            query_dim, cross_attention_dim=context_dim, heads=heads, dim_head=head_dim, dropout=dropout,
            upcast_attention=upcast_attention, processor=NoiseUNetAttnProcessor(),
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **processor_kwargs,
    ) -> torch.Tensor:
        """Run the processor; ``processor_kwargs`` (cross_attention_kwargs such as an IP-Adapter's masks) go
        only to a processor that takes them. NoiseUNet.forward has already refused keys no processor takes."""
        if processor_kwargs:
            accepted = inspect.signature(self.processor.__call__).parameters
            processor_kwargs = {k: v for k, v in processor_kwargs.items() if k in accepted}
        return self.processor(
            self, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
            **processor_kwargs,
        )

    def set_attention_slice(self, slice_size: int | None) -> None:
        """diffusers' sliced processor for a slice size; back to NoiseUNet's processor for None."""
        super().set_attention_slice(slice_size)
        if slice_size is None:
            self.set_processor(NoiseUNetAttnProcessor())


class GEGLU(nn.Module):
    """Gated GELU unit (Shazeer 2020, "GLU Variants Improve Transformer"): one projection gives a value
    and a gate, the output is value * GELU(gate)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU -> dropout -> Linear, 4x wide; ``net`` indices match diffusers' (net.0.proj, net.2)."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Conditioning(NamedTuple):
    """What the attention layers read besides the image tokens, passed down the UNet as one value.

    context: text features (B, M, D), None for an unconditional model; with an IP-Adapter, the pair
        (text features, projected image features) its processors take apart.
    self_bias / cross_bias: additive (B, 1, keys) scores, -10000 on masked keys.
    attention_kwargs: cross_attention_kwargs for the processors (an IP-Adapter's scale or masks, ...).
    """

    context: torch.Tensor | tuple | None = None
    self_bias: torch.Tensor | None = None
    cross_bias: torch.Tensor | None = None
    attention_kwargs: dict[str, Any] | None = None


class TransformerBlock(nn.Module):
    """Pre-norm layer: x += SelfAttn(LN(x)); x += CrossAttn(LN(x), text); x += FF(LN(x)).

    ``only_cross_attention`` (the x4 upscaler's upper levels) makes the first attention look at the text too.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int,
        dropout: float = 0.0,
        only_cross_attention: bool = False,
        upcast_attention: bool = False,
    ):
        super().__init__()
        self.only_cross_attention = only_cross_attention
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, context_dim=context_dim if only_cross_attention else None,
                               dropout=dropout, upcast_attention=upcast_attention)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim, dropout=dropout,
                               upcast_attention=upcast_attention)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        kwargs = cond.attention_kwargs or {}
        first_context = cond.context if self.only_cross_attention else None
        x = x + self.attn1(self.norm1(x), first_context, cond.self_bias, **kwargs)
        if cond.context is not None:  # an unconditional model (no text) simply has no cross-attention term
            x = x + self.attn2(self.norm2(x), cond.context, cond.cross_bias, **kwargs)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm -> proj_in -> transformer layers over the H*W tokens -> proj_out -> + input.

    proj_in/proj_out are 1x1 convolutions (SD 1.x) or linear layers on the tokens (SD 2.x,
    ``use_linear_projection``); both are the same map, stored in the shape the checkpoints use.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        layers: int,
        context_dim: int,
        groups: int = 32,
        use_linear_projection: bool = False,
        dropout: float = 0.0,
        only_cross_attention: bool = False,
        upcast_attention: bool = False,
    ):
        super().__init__()
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        make_proj = (lambda: nn.Linear(channels, channels)) if use_linear_projection else (lambda: nn.Conv2d(channels, channels, 1))
        self.proj_in = make_proj()
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(channels, heads, channels // heads, context_dim, dropout, only_cross_attention,
                             upcast_attention)
            for _ in range(layers)
        )
        self.proj_out = make_proj()

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x)
        if not self.use_linear_projection:
            tokens = self.proj_in(tokens)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if self.use_linear_projection:
            tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, cond)
        if self.use_linear_projection:
            tokens = self.proj_out(tokens)
        tokens = tokens.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_linear_projection:
            tokens = self.proj_out(tokens)
        return x + tokens

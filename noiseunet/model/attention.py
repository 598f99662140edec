"""Attention: how image tokens look at each other (self) and at the text (cross).

A spatial transformer (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models") flattens a feature map into H*W tokens and runs transformer layers over them. In each layer,
self-attention mixes image tokens; cross-attention takes its queries from the image tokens and its
keys/values from the text encoder's features, which is the only place the prompt enters the UNet.
"""

import torch
import torch.nn.functional as F
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


class Attention(nn.Module):
    """Multi-head scaled dot-product attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0),
    so PEFT LoRA adapters and Stable Diffusion checkpoints address the same weights."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, N, query_dim) queries; context: (B, M, context_dim) keys/values (x itself when None);
        bias: additive (B, 1, M) scores, -10000 on masked keys."""
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, heads, tokens, d)
        if bias is not None:
            bias = bias.to(q.dtype).unsqueeze(1)  # broadcast over heads and queries
        out = attention(q, k, v, bias)
        out = out.transpose(1, 2).flatten(2)
        return self.to_out[1](self.to_out[0](out))


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


class TransformerBlock(nn.Module):
    """Pre-norm layer: x += SelfAttn(LN(x)); x += CrossAttn(LN(x), text); x += FF(LN(x))."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        self_bias: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), bias=self_bias)
        if context is not None:  # an unconditional model (no text) simply has no cross-attention term
            x = x + self.attn2(self.norm2(x), context, bias=cross_bias)
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
    ):
        super().__init__()
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        make_proj = (lambda: nn.Linear(channels, channels)) if use_linear_projection else (lambda: nn.Conv2d(channels, channels, 1))
        self.proj_in = make_proj()
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(channels, heads, channels // heads, context_dim, dropout) for _ in range(layers)
        )
        self.proj_out = make_proj()

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        self_bias: torch.Tensor | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x)
        if not self.use_linear_projection:
            tokens = self.proj_in(tokens)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if self.use_linear_projection:
            tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context, self_bias, cross_bias)
        if self.use_linear_projection:
            tokens = self.proj_out(tokens)
        tokens = tokens.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_linear_projection:
            tokens = self.proj_out(tokens)
        return x + tokens

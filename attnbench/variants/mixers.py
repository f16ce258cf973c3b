"""Attention-free token mixers: FNet, gMLP's spatial gating unit, MLP-Mixer's token MLP.

The lecture's "attention-free" slide: the tokens are mixed by a fixed transform
(FNet's Fourier transform) or by learned weights over the token axis (gMLP,
MLP-Mixer) instead of query-key products. Each is a whole layer x (B, N, dim) ->
(B, N, dim); ``heads`` is accepted (every layer takes it) and ignored.

FLOPs (README convention, plus): a complex FFT of length n costs 5·n·log2(n); a
LayerNorm 5 per element (mean, subtract, variance, scale, affine); GELU 8 per
element (its tanh form: a cubic, a tanh and three more operations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants.layer import AttentionLayer, acc_dtype, check_int, linear_flops, matmul_flops
from attnbench.variants.registry import register

LAYER_NORM_FLOPS_PER_ELEMENT = 5
GELU_FLOPS_PER_ELEMENT = 8


def fft_flops(transforms: int, length: int) -> int:
    """``transforms`` complex FFTs of ``length`` points, 5·n·log2(n) each."""
    return transforms * 5 * length * max(1, math.ceil(math.log2(max(2, length))))


@register("fnet", family="mixer", paper="2105.03824", complexity="O(N·log N·d)", causal=False)
class FNetMixing(AttentionLayer):
    """FNet (Lee-Thorp et al., arXiv 2105.03824): y = Re(FFT_N(FFT_dim(x))), a 2-D
    discrete Fourier transform over the sequence and the hidden dimension, real part
    kept; no parameters, heads ignored. Not causal (every output mixes all tokens).

    Half-precision inputs are transformed in float32 (CPU FFTs have no half types)."""

    decode_refusal = 'cannot decode: it is not causal (a Fourier transform over the sequence)'

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__(dim, heads, seq_len, causal)
        if causal:
            raise ValueError("fnet does not support causal attention (the Fourier transform mixes all tokens)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = acc_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            return torch.fft.fft2(x.to(dt), dim=(-2, -1)).real.to(x.dtype)

    def flops(self, batch: int, seq_len: int) -> int:
        return fft_flops(batch * seq_len, self.dim) + fft_flops(batch * self.dim, seq_len)


@register("gmlp", family="mixer", paper="2105.08050", complexity="O(N²·d)", causal=True)
class GatedMLPMixing(AttentionLayer):
    """gMLP's spatial gating unit (Liu et al., "Pay Attention to MLPs", arXiv 2105.08050):
    u = GELU(x W_in) (dim → 2·dim), split u = [z1, z2],
    out = (z1 ⊙ (W_s LayerNorm(z2) + b)) W_out, W_s ∈ R^{N×N}, heads ignored.

    As the paper initialises it: W_s near zero (uniform ±10⁻³/N) and b = 1, so the
    unit starts as a position-wise MLP. Causal: W_s lower-triangular (a token never
    reads a later one). W_s has one row and column per position: the layer is built
    for its seq_len."""

    decode_refusal = 'cannot decode: its spatial gate is a learned N×N projection, with no weights for a token past N'

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__(dim, heads, seq_len, causal)
        self.proj_in = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim)
        eps = 1e-3 / seq_len
        self.spatial_weight = nn.Parameter(torch.empty(seq_len, seq_len).uniform_(-eps, eps))
        self.spatial_bias = nn.Parameter(torch.ones(seq_len, 1))
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-2]
        if n != self.seq_len:
            raise ValueError(f"gmlp was built for seq_len {self.seq_len}, got {n}: "
                             "its spatial weight has one row and column per position")
        b = x.shape[0]
        z1, z2 = F.gelu(self.proj_in(x)).chunk(2, dim=-1)
        weight = self.spatial_weight.tril() if self.causal else self.spatial_weight
        # One (N×N)·(N×B·dim) product: the batch rows side by side (a view at batch 1),
        # not a batched product of an expanded W_s, whose backward sums B copies.
        tokens_first = self.norm(z2).transpose(0, 1).reshape(n, b * self.dim)
        gate = torch.addmm(self.spatial_bias.to(x.dtype), weight.to(x.dtype), tokens_first)
        return self.proj_out(z1 * gate.view(n, b, self.dim).transpose(0, 1))

    def flops(self, batch: int, seq_len: int) -> int:
        tokens, dim = batch * seq_len, self.dim
        projections = linear_flops(tokens, dim, 2 * dim) + linear_flops(tokens, dim, dim)
        spatial = batch * matmul_flops(seq_len, dim, seq_len) + tokens * dim  # W_s z2 + b
        elementwise = (GELU_FLOPS_PER_ELEMENT * 2 * tokens * dim
                       + LAYER_NORM_FLOPS_PER_ELEMENT * tokens * dim + tokens * dim)  # gate product
        return projections + spatial + elementwise


@register("mixer", family="mixer", paper="2105.01601", complexity="O(N·D_s·d)", causal=False)
class TokenMixing(AttentionLayer):
    """MLP-Mixer's token-mixing MLP (Tolstikhin et al., arXiv 2105.01601):
    y = (W₂ GELU(W₁ LayerNorm(x)ᵀ + b₁) + b₂)ᵀ, the same two-layer MLP applied to every
    channel along the token axis, W₁ ∈ R^{D_s×N}, W₂ ∈ R^{N×D_s}, D_s = ``token_hidden``;
    heads ignored. Not causal (W₁ mixes all tokens). The weights have one row or
    column per position: the layer is built for its seq_len.

    Parameters:
        token_hidden: D_s: hidden width of the token-mixing MLP
    """

    decode_refusal = 'cannot decode: it is not causal (an MLP across all N positions)'

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 token_hidden: int = 256) -> None:
        super().__init__(dim, heads, seq_len, causal)
        if causal:
            raise ValueError("mixer does not support causal attention (its token MLP mixes all tokens)")
        self.token_hidden = check_int("mixer token_hidden", token_hidden)
        self.norm = nn.LayerNorm(dim)
        self.token_in = nn.Linear(seq_len, token_hidden)  # W₁, b₁
        self.token_out = nn.Linear(token_hidden, seq_len)  # W₂, b₂

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-2]
        if n != self.seq_len:
            raise ValueError(f"mixer was built for seq_len {self.seq_len}, got {n}: "
                             "its token MLP has one weight per position")
        h = self.norm(x)
        w1, w2 = self.token_in.weight.to(x.dtype), self.token_out.weight.to(x.dtype)
        b1, b2 = self.token_in.bias.to(x.dtype), self.token_out.bias.to(x.dtype)
        # W₁ h over the token axis, (D_s, N) · (N, dim) per batch row, bias per hidden unit:
        # a 1-wide convolution with the tokens as channels. Its backward sums the weight's
        # gradient over the batch in one GEMM, where baddbmm on an expanded weight makes a
        # per-row copy of the weight first.
        hidden = F.conv1d(h, w1[:, :, None], b1)
        return F.conv1d(F.gelu(hidden), w2[:, :, None], b2)

    def flops(self, batch: int, seq_len: int) -> int:
        tokens, dim, hidden = batch * seq_len, self.dim, self.token_hidden
        mlp = batch * (matmul_flops(hidden, dim, seq_len) + matmul_flops(seq_len, dim, hidden))
        elementwise = (LAYER_NORM_FLOPS_PER_ELEMENT * tokens * dim + batch * hidden * dim  # + b₁
                       + GELU_FLOPS_PER_ELEMENT * batch * hidden * dim + tokens * dim)  # + b₂
        return mlp + elementwise

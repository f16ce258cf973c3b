"""A custom attention for attnbench: grouped-query attention.

Grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245) keeps ``heads``
query heads but only ``kv_heads`` key/value heads, each shared by a group of
query heads; ``kv_heads=1`` is multi-query attention (Shazeer 2019,
arXiv 1911.02150). It shrinks the k/v projections (and a decoder's KV cache)
while the N×N score computation stays that of softmax attention.

Benchmark it against the built-in variants from the repository root:

    attnbench run examples/my_suite.yaml

The suite names it by import path, ``examples.my_attention:MyAttention``.
attnbench calls ``MyAttention(dim=..., heads=..., seq_len=..., causal=...,
**params)``; ``kv_heads`` is a parameter a suite can set
(``params: {kv_heads: 2}``). ``flops(batch, seq_len)`` gives the analytic FLOPs
of one forward pass (without it attnbench would count them with
torch.utils.flop_counter). Nothing here imports attnbench: any nn.Module with
this constructor and ``x (batch, seq_len, dim) -> same shape`` will do.
"""

from __future__ import annotations

import torch
from torch import nn


class MyAttention(nn.Module):
    """Grouped-query attention: ``heads`` query heads share ``kv_heads`` key/value heads."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, kv_heads: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        if kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"kv_heads ({kv_heads}) must divide heads ({heads})")
        self.dim, self.heads, self.kv_heads, self.causal = dim, heads, kv_heads, causal
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, g, d = self.heads, self.kv_heads, self.head_dim
        q = self.q(x).view(b, n, g, h // g, d).permute(0, 2, 3, 1, 4)  # (b, g, h/g, n, d)
        k, v = self.kv(x).view(b, n, 2, g, 1, d).permute(2, 0, 3, 4, 1, 5)  # each (b, g, 1, n, d)
        scores = torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5  # (b, g, h/g, n, n)
        if self.causal:
            future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, g, h/g, n, d)
        return self.out(out.permute(0, 3, 1, 2, 4).reshape(b, n, self.dim))

    def flops(self, batch: int, seq_len: int) -> int:
        """FLOPs of one forward: a matrix product (m×k)(k×n) is 2mkn, softmax 5 per score."""
        tokens, n, d = batch * seq_len, seq_len, self.head_dim
        projections = 2 * tokens * self.dim * (self.dim + 2 * self.kv_heads * d + self.dim)
        attention = batch * self.heads * (2 * n * n * d * 2 + 5 * n * n)
        return projections + attention

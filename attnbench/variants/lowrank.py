"""Fewer keys: project or summarise the N keys into k ≪ N (Linformer, Nyström)."""

from __future__ import annotations

import torch
from torch import nn

from attnbench.variants.layer import AttentionCore, matmul_flops, softmax_flops
from attnbench.variants.registry import register


@register("linformer", family="lowrank", paper="2006.04768", complexity="O(N·k·d)", causal=False)
class LinformerAttention(AttentionCore):
    """Linformer: keys and values projected along the sequence, K' = E k, V' = F v,
    with learned E, F ∈ R^{k×N} shared across heads; softmax(q K'ᵀ/√d) V'."""

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 k: int = 256) -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if not isinstance(k, int) or k <= 0:
            raise ValueError(f"linformer k must be a positive integer, got {k!r}")
        self.k = k
        std = k ** -0.5
        self.proj_k = nn.Parameter(torch.randn(k, seq_len) * std)
        self.proj_v = nn.Parameter(torch.randn(k, seq_len) * std)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = k.shape[-2]
        if n != self.seq_len:
            raise ValueError(f"linformer was built for seq_len {self.seq_len}, got {n}: "
                             "its projections E, F have one column per position")
        keys = torch.einsum("kn,bhnd->bhkd", self.proj_k, k)
        values = torch.einsum("kn,bhnd->bhkd", self.proj_v, v)
        scores = torch.matmul(q, keys.transpose(-1, -2)) * self.scale
        probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
        return torch.matmul(probs.to(v.dtype), values)

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d, k = batch * self.heads, seq_len, self.head_dim, self.k
        project = 2 * bh * matmul_flops(k, d, n)
        attend = bh * (matmul_flops(n, k, d) + matmul_flops(n, d, k)) + softmax_flops(bh * n * k)
        return project + attend

"""Fastformer: additive attention, linear in N (arXiv 2108.09084).

Per head: α = softmax(w_qᵀ q_i / √d), q_g = Σ α_i q_i; p_i = q_g ⊙ k_i;
β = softmax(w_kᵀ p_i / √d), k_g = Σ β_i p_i; u_i = k_g ⊙ v_i;
out_i = W_r u_i + q_i. The keys are pooled *after* the product with the
global query (one public version pools the raw keys instead), and with
``share_qv`` the values reuse the query projection, as the paper does.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbench.variants.layer import AttentionLayer, acc_dtype, linear_flops, softmax_flops
from attnbench.variants.registry import register


@register("fastformer", family="fastformer", paper="2108.09084", complexity="O(N·d)", causal=False)
class Fastformer(AttentionLayer):
    """Fastformer additive attention: global query and key vectors pooled by
    learned per-head scores, combined element-wise; linear in N.

    Parameters:
        share_qv: the values reuse the query projection, as in the paper
    """

    decode_refusal = 'cannot decode: it is not causal (its global query and key pool every token)'

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False,
                 share_qv: bool = True) -> None:
        super().__init__(dim, heads, seq_len, causal)
        if not isinstance(share_qv, bool):
            raise ValueError(f"fastformer share_qv must be true or false, got {share_qv!r}")
        self.share_qv = share_qv
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = None if share_qv else nn.Linear(dim, dim)
        self.w_q = nn.Parameter(torch.randn(heads, self.head_dim) * self.head_dim ** -0.5)
        self.w_k = nn.Parameter(torch.randn(heads, self.head_dim) * self.head_dim ** -0.5)
        self.transform = nn.Linear(dim, dim)  # W_r
        self.scale = self.head_dim ** -0.5

    def _pool(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Σ_i softmax_i(wᵀ t_i s) t_i per head: (B, H, N, d) -> (B, H, 1, d)."""
        scores = torch.einsum("bhnd,hd->bhn", t, w) * self.scale
        weights = torch.softmax(scores, dim=-1, dtype=acc_dtype(t.dtype))
        return torch.einsum("bhn,bhnd->bhd", weights.to(t.dtype), t).unsqueeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q_flat = self.to_q(x)
        q = self.split_heads(q_flat)
        k = self.split_heads(self.to_k(x))
        v = q if self.to_v is None else self.split_heads(self.to_v(x))
        global_q = self._pool(q, self.w_q)
        p = global_q * k
        global_k = self._pool(p, self.w_k)
        u = self.merge_heads(global_k * v)
        return self.transform(u) + q_flat

    def flops(self, batch: int, seq_len: int) -> int:
        tokens = batch * seq_len
        n_proj = 2 if self.share_qv else 3
        projections = (n_proj + 1) * linear_flops(tokens, self.dim, self.dim)  # q, k, (v), W_r
        elements = tokens * self.dim
        # two pools: score dot (2), weighted sum (2); two products (p, u); residual.
        pools = 2 * (2 * elements + 2 * elements) + 2 * softmax_flops(batch * self.heads * seq_len)
        return projections + pools + 3 * elements

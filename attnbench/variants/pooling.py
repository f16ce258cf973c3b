"""Poolingformer: two-level pooling attention (Zhang et al., "Poolingformer: Long
Document Modeling with Pooling Attention", ICML 2021, arXiv 2105.04371), a sparse
pattern kept apart from sparse.py for its length; it reuses that module's band.

Level 1 is a sliding window: query i sees keys |i − j| ≤ w₁/2, giving y. Level 2
reads y: its own per-head projections q₂ = y W_q, k₂ = y W_k, v₂ = y W_v, the keys
and values pooled (kernel κ, stride ξ: mean, max, or a lightweight convolution:
a softmax-normalised κ-tap kernel per head), and query i attends to the pooled
slots inside its larger window |i − j| ≤ w₂/2, giving z; out = y + z.

Defaults: w₁ = 128, w₂ = 512, κ = ξ = 4, mean pooling, as ../shared/VARIANTS.md
gives them. The paper's own κ and ξ could not be checked here: the search tools of
this project reached only summaries of the paper (which name κ and ξ but give no
values), not its text or code, so κ = ξ = 4 is the specification's value, not a
verified citation of the paper's setting. w₁ = 128 and w₂ = 512 are the window
sizes the specification attributes to the paper.

The slots are pooled once over the whole sequence (slot s covers positions
ξ·s … ξ·s + κ − 1, complete slots only) and query i sees the slots lying wholly in
its window, i − w₂/2 ≤ ξ·s and ξ·s + κ − 1 ≤ i + w₂/2: one pooling pass instead of
one per query. Queries run in blocks of a multiple of ξ against a band of slots,
one batched product, under an exact mask; nothing is N×N. Not causal (the paper
has no causal form).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.variants.layer import attend_flops, check_int, in_cpu_runs, in_head_groups, matmul_flops, pad_seq
from attnbench.variants.registry import register
from attnbench.variants.sparse import SparseCore, attend_scores, band_attention, band_flops

Tensor = torch.Tensor
Pool = Literal["mean", "max", "conv"]
POOLS = get_args(Pool)
QUERY_BLOCK = 64  # level-2 queries per block, rounded up to a multiple of ξ


@register("poolingformer", family="sparse", paper="2105.04371", complexity="O(N·(w₁ + w₂/ξ)·d)",
          causal=False)
class PoolingformerAttention(SparseCore):
    """Poolingformer: a sliding window ±w₁/2 gives y, then y's keys and values pooled
    (kernel κ, stride ξ) over a larger window ±w₂/2 give z; out = y + z.
    ``pool_window: 0`` keeps level 1 only.

    Parameters:
        window: w₁: level-1 sliding window (±w₁/2)
        pool_window: w₂: level-2 window over pooled slots (±w₂/2; 0: level 1 only)
        pool_kernel: κ: positions pooled into one slot
        pool_stride: ξ: stride between slots
        pool: mean, max or conv (a softmax-normalised κ-tap kernel per head)
    """

    decode_refusal = 'cannot decode: it is not causal (its pooled second level reads every token)'

    approximates_softmax = False  # y + z: two attentions added, not an estimate of one
    linear_in_values = False  # level 2 projects y, a function of v

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 window: int = 128, pool_window: int = 512, pool_kernel: int = 4, pool_stride: int = 4,
                 pool: Pool = "mean") -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if causal:
            raise ValueError("poolingformer does not support causal attention (the paper has no causal form)")
        self.window = check_int("poolingformer window", window)
        self.pool_window = check_int("poolingformer pool_window", pool_window, 0)
        self.pool_kernel = check_int("poolingformer pool_kernel", pool_kernel)
        self.pool_stride = check_int("poolingformer pool_stride", pool_stride)
        if pool not in POOLS:
            raise ValueError(f"poolingformer pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if pool_window and pool_window // 2 < pool_kernel + pool_stride:
            raise ValueError(f"poolingformer pool_window ({pool_window}) must be 0 (level 1 only) or at "
                             f"least 2·(pool_kernel + pool_stride) = {2 * (pool_kernel + pool_stride)}, "
                             "so that every query sees a pooled slot")
        self.pool = pool
        if pool_window:
            eye = torch.eye(head_dim).expand(heads, head_dim, head_dim)
            self.proj_q2, self.proj_k2, self.proj_v2 = (nn.Parameter(eye.clone()) for _ in range(3))
            # conv: zero logits are the mean at start
            self.pool_logits = nn.Parameter(torch.zeros(heads, pool_kernel)) if pool == "conv" else None

    def _level1(self, n: int) -> tuple[int, int, int]:
        half = self.window // 2
        return max(1, min(half, n)), half, half

    def _pool_shape(self, n: int) -> tuple[int, int, int]:
        """(κ, ξ, slots) at length n (κ and ξ at most n)."""
        kappa, stride = min(self.pool_kernel, n), min(self.pool_stride, n)
        return kappa, stride, (n - kappa) // stride + 1

    def _geometry(self, n: int) -> tuple[int, int, int, int, int]:
        """(queries per block, slots per block step, slots looked at before a block's
        first, slots per block, blocks)."""
        kappa, stride, _ = self._pool_shape(n)
        half = self.pool_window // 2
        step = -(-min(QUERY_BLOCK, n) // stride)
        block = step * stride
        back = half // stride
        width = max(1, back + (block - kappa + half) // stride + 1)
        return block, step, back, width, -(-n // block)

    def _slot_mask(self, n: int, device: torch.device) -> Tensor:
        """(blocks, block, width), True where query i may NOT see slot s."""
        kappa, stride, slots = self._pool_shape(n)
        block, step, back, width, n_blocks = self._geometry(n)
        half = self.pool_window // 2
        i = torch.arange(n_blocks * block, device=device).view(n_blocks, block, 1)
        s = (torch.arange(n_blocks, device=device).view(n_blocks, 1, 1) * step - back
             + torch.arange(width, device=device))
        return (s < 0) | (s >= slots) | (s * stride < i - half) | (s * stride + kappa - 1 > i + half)

    def pooled(self, t: Tensor, n: int) -> Tensor:
        """(B, H, N, d) -> (B, H, slots, d): kernel κ, stride ξ, complete slots only."""
        kappa, stride, _ = self._pool_shape(n)
        windows = t.unfold(2, kappa, stride)  # (B, H, slots, d, κ), a view
        if self.pool == "mean":
            return windows.mean(-1)
        if self.pool == "max":
            return windows.amax(-1)
        taps = torch.softmax(self.pool_logits[:, :kappa].to(t.dtype), dim=-1)  # (H, κ)
        return torch.einsum("bhsdk,hk->bhsd", windows, taps)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[-2]
        y = band_attention(self, q * self.scale, k, v, *self._level1(n))
        if not self.pool_window:
            return y
        q2 = torch.matmul(y, self.proj_q2.to(y.dtype)) * self.scale
        keys = self.pooled(torch.matmul(y, self.proj_k2.to(y.dtype)), n)
        values = self.pooled(torch.matmul(y, self.proj_v2.to(y.dtype)), n)
        blocked = self._cached(("slots", n, q.device), lambda: self._slot_mask(n, q.device))
        block, step, back, width, n_blocks = self._geometry(n)

        def heads(q2: Tensor, keys: Tensor, values: Tensor, _: slice) -> Tensor:
            b, h, _, d = q2.shape
            right = max(0, (n_blocks - 1) * step + width - back - keys.shape[2])

            def windows(t: Tensor) -> Tensor:  # (B, H, blocks, width, d): overlapping views
                return F.pad(t, (0, 0, back, right)).unfold(2, width, step).transpose(-1, -2)[:, :, :n_blocks]

            queries = pad_seq(q2, n_blocks * block).view(b, h, n_blocks, block, d)

            def run(qs: Tensor, ks: Tensor, vs: Tensor, r: slice) -> Tensor:  # the query blocks r
                return attend_scores(qs, ks, vs, blocked[r])

            out = in_cpu_runs(run, (queries, windows(keys), windows(values)), 2,
                              b * h * block * width * q2.element_size())
            return out.view(b, h, n_blocks * block, d)[:, :, :n]

        return y + in_head_groups(heads, q2, keys, values, width)

    def flops(self, batch: int, seq_len: int) -> int:
        bh, n, d = batch * self.heads, seq_len, self.head_dim
        level1 = band_flops(bh, n, *self._level1(n), d)
        if not self.pool_window:
            return level1
        kappa, _, slots = self._pool_shape(n)
        block, _, _, width, n_blocks = self._geometry(n)
        projections = 3 * matmul_flops(n, d, d) + n * d  # q₂, k₂, v₂ and the scale
        pooling = 2 * 2 * slots * d * kappa  # a weighted sum of κ taps for keys and values
        attend = attend_flops(n_blocks * block, width, d) + n * d  # + y
        return level1 + bh * (projections + pooling + attend)

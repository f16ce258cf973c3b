"""Exact attention: the materialised N×N softmax and torch's fused SDPA.

``softmax`` is the "vanilla Transformer" of every efficiency table
(arXiv 1706.03762); ``sdpa`` is the same function computed by
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from attnbench.model import SDPA_KERNELS
from attnbench.variants.layer import (
    AttentionCore,
    acc_dtype,
    attend_flops,
    causal_mask,
)
from attnbench.variants.registry import register


@register("softmax", family="exact", paper="1706.03762", complexity="O(N²·d)", causal=True)
class SoftmaxAttention(AttentionCore):
    """Vanilla attention: softmax(q kᵀ/√d + mask) v with the N×N matrix materialised."""

    approximates_softmax = True
    linear_in_values = True

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.causal:
            mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
            scores = scores.masked_fill(~mask, float("-inf"))
        # Normalise in float32 at least: half-precision exp sums lose digits.
        probs = torch.softmax(scores, dim=-1, dtype=acc_dtype(scores.dtype))
        return torch.matmul(probs.to(v.dtype), v)

    def flops(self, batch: int, seq_len: int) -> int:
        return batch * self.heads * attend_flops(seq_len, seq_len, self.head_dim)


# The kernels a suite may pin (model.SDPA_KERNELS names each one's SDPBackend member).
_PINNABLE = {kernel.name: kernel.sdp_backend for kernel in SDPA_KERNELS if kernel.sdp_backend}
SDPA_BACKENDS = ("auto", *_PINNABLE)


def _sdpa_context(backend: str) -> contextlib.AbstractContextManager:
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, _PINNABLE[backend])])


@register("sdpa", family="exact", paper="2205.14135", complexity="O(N²·d), O(N) memory when fused",
          causal=True)
class SDPAttention(AttentionCore):
    """torch.nn.functional.scaled_dot_product_attention; ``backend`` pins one kernel."""

    approximates_softmax = True
    linear_in_values = True
    uses_fused_sdpa = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 backend: str = "auto") -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if backend not in SDPA_BACKENDS:
            raise ValueError(f"sdpa backend must be one of {', '.join(SDPA_BACKENDS)}, got {backend!r}")
        self.backend = backend

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with _sdpa_context(self.backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)

    def flops(self, batch: int, seq_len: int) -> int:
        full = batch * self.heads * attend_flops(seq_len, seq_len, self.head_dim)
        # Fused kernels skip the blocks above the diagonal when causal.
        return full // 2 if self.causal else full

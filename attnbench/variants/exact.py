"""Exact attention: the materialised N×N softmax and torch's fused SDPA.

``softmax`` is the "vanilla Transformer" of every efficiency table
(arXiv 1706.03762); ``sdpa`` is the same function computed by
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from attnbench.model import SDPA_KERNELS
from attnbench.variants.decoding import DecodeState, group_queries, kv_cache_append, kv_cache_prefill, ungroup_queries
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
    decode_refusal = None  # a KV cache
    kv_heads_refusal = None
    grouped_forward = True

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        if groups > 1:  # the query heads of a group side by side against their shared k, v
            b, h, n, d = q.shape
            out = self.attend(q.view(b, k.shape[1], groups, n, d), k.unsqueeze(2), v.unsqueeze(2), self.causal)
            return out.view(b, h, n, d)
        return self.attend(q, k, v, self.causal)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if causal:
            mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
            scores = scores.masked_fill(~mask, float("-inf"))
        # Normalise in float32 at least: half-precision exp sums lose digits.
        probs = torch.softmax(scores, dim=-1, dtype=acc_dtype(scores.dtype))
        return torch.matmul(probs.to(v.dtype), v)

    def decode_state(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> DecodeState:
        return kv_cache_prefill(k, v, capacity)

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """The cache against the group's queries, K·qᵀ (N × G) rather than q·Kᵀ: the tall,
        narrow product streams the cache row by row and ran faster on a 2-core CPU
        (benchmarks/NOTES.md, decode); then the softmax over the keys and Pᵀ·V."""
        keys, values, state = kv_cache_append(state, k, v)
        grouped = group_queries(q, k.shape[1])
        scores = torch.matmul(keys, grouped.transpose(-1, -2)) * self.scale  # (B, kv_heads, N, G)
        probs = torch.softmax(scores, dim=-2, dtype=acc_dtype(scores.dtype)).to(values.dtype)
        return ungroup_queries(torch.matmul(probs.transpose(-1, -2), values), q.shape[1]), state

    def flops(self, batch: int, seq_len: int) -> int:
        return batch * self.heads * attend_flops(seq_len, seq_len, self.head_dim)


# The kernels a suite may pin (model.SDPA_KERNELS names each one's SDPBackend member).
_PINNABLE = {kernel.name: kernel.sdp_backend for kernel in SDPA_KERNELS if kernel.sdp_backend}
# One source of the choices: the constructor's Literal hint (which `validate` reads) is built
# from model.SDPA_KERNELS, and the runtime check reads the hint's arguments.
SdpaBackend = Literal[("auto", *_PINNABLE)]  # type: ignore[valid-type]
SDPA_BACKENDS: tuple[str, ...] = get_args(SdpaBackend)


def _sdpa_context(backend: str) -> contextlib.AbstractContextManager:
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, _PINNABLE[backend])])


@register("sdpa", family="exact", paper="2205.14135", complexity="O(N²·d), O(N) memory when fused",
          causal=True)
class SDPAttention(AttentionCore):
    """torch.nn.functional.scaled_dot_product_attention; ``backend`` pins one kernel.

    Parameters:
        backend: the SDPA kernel to pin; auto lets torch choose
    """

    approximates_softmax = True
    linear_in_values = True
    uses_fused_sdpa = True
    decode_refusal = None  # a KV cache
    kv_heads_refusal = None
    grouped_forward = True

    def __init__(self, heads: int, head_dim: int, seq_len: int, causal: bool = False,
                 backend: SdpaBackend = "auto") -> None:
        super().__init__(heads, head_dim, seq_len, causal)
        if backend not in SDPA_BACKENDS:
            raise ValueError(f"sdpa backend must be one of {', '.join(SDPA_BACKENDS)}, got {backend!r}")
        self.backend = backend

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with _sdpa_context(self.backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                                  enable_gqa=k.shape[1] != q.shape[1])

    def decode_state(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> DecodeState:
        return kv_cache_prefill(k, v, capacity)

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """The token's query heads of a group as G rows against their shared cache: each
        key/value head is read once, and no mask (the token sees every cached key)."""
        keys, values, state = kv_cache_append(state, k, v)
        with _sdpa_context(self.backend):
            out = F.scaled_dot_product_attention(group_queries(q, k.shape[1]), keys, values)
        return ungroup_queries(out, q.shape[1]), state

    def flops(self, batch: int, seq_len: int) -> int:
        full = batch * self.heads * attend_flops(seq_len, seq_len, self.head_dim)
        # Fused kernels skip the blocks above the diagonal when causal.
        return full // 2 if self.causal else full

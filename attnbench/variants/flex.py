"""FlexAttention versions of the sparse patterns (torch.nn.attention.flex_attention).

``flex_local``, ``flex_strided``, ``flex_longformer`` and ``flex_bigbird``
compute exactly the pattern of their eager counterparts in ``sparse.py``
(they subclass them, so parameters, defaults and BigBird's seeded random
blocks are shared), expressed as a ``mask_mod`` turned into a block-sparse
``BlockMask``: fully masked tiles are skipped, so the cost follows the
pattern. On CPU PyTorch gives FlexAttention no backward: the backward passes
of these variants are recorded as skipped there. FlexAttention is fused only under ``torch.compile`` (on CUDA, and on
CPU through inductor's C++ backend); the compiled kernel is built once per
shape, the first call pays for it (record it with ``compile: true`` in a
suite so the compilation is timed apart). Set ``ATTNBENCH_FLEX_EAGER=1`` to
run the unfused reference path (it materialises the scores: tests only).

The BlockMask is built once per (N, device) and cached; building it evaluates
the mask at every (query, key) pair once, outside the timed passes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from attnbench.variants.registry import register
from attnbench.variants.sparse import (
    BigBirdAttention,
    LocalAttention,
    LongformerAttention,
    StridedAttention,
)

Tensor = torch.Tensor
TILE = 128  # FlexAttention's default block size


def _eager() -> bool:
    return os.environ.get("ATTNBENCH_FLEX_EAGER") == "1"


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    if _eager():
        return flex_attention
    return torch.compile(flex_attention, dynamic=False)


class _FlexMixin:
    """Shared forward: build (and cache) the BlockMask, then one flex_attention call."""

    heads: int
    scale: float
    causal: bool
    #: PyTorch has no FlexAttention backward on CPU (a capability flag the tests read).
    cpu_backward = False

    def mask_mod(self, n: int, device: torch.device) -> Callable:  # pragma: no cover - abstract
        raise NotImplementedError

    #: the mask depends on the head (the BlockMask is then built per head)
    per_head: bool = False

    def block_mask(self, n: int, device: torch.device):  # noqa: ANN201 - BlockMask
        from torch.nn.attention.flex_attention import create_block_mask

        def make():  # noqa: ANN202
            base = self.mask_mod(n, device)
            if self.causal:
                def mask(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202
                    return base(b, h, q_idx, kv_idx) & (kv_idx <= q_idx)
            else:
                mask = base
            return create_block_mask(mask, B=None, H=self.heads if self.per_head else None,
                                     Q_LEN=n, KV_LEN=n, device=device, BLOCK_SIZE=TILE)

        return self._cached(("flex", n, device), make)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[-2]
        if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad \
                and not _eager():
            raise NotImplementedError("FlexAttention has no backward on CPU in PyTorch; "
                                      "time the flex variants' backward passes on CUDA")
        mask = self.block_mask(n, q.device)
        return _compiled_flex()(q, k, v, block_mask=mask, scale=self.scale)


@register("flex_local", family="sparse", paper="1802.05751", complexity="O(N·w·d)", causal=True)
class FlexLocalAttention(_FlexMixin, LocalAttention):
    """``local``'s band |i − j| ≤ window as a FlexAttention block mask.

    Parameters:
        window: w: keys within w of the query are seen; queries run in blocks of w
    """

    def mask_mod(self, n: int, device: torch.device) -> Callable:
        w = self.window
        return lambda b, h, q_idx, kv_idx: (q_idx - kv_idx).abs() <= w


@register("flex_strided", family="sparse", paper="1904.10509", complexity="O(N·√N·d)", causal=True)
class FlexStridedAttention(_FlexMixin, StridedAttention):
    """``strided``'s local and strided heads as one FlexAttention block mask.

    Parameters:
        stride: l: the strided heads' stride and the local heads' width; None: ⌈√N⌉
    """

    per_head = True

    def mask_mod(self, n: int, device: torch.device) -> Callable:
        stride = self._stride(n)
        n_local = self.local_heads

        def mask(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202
            rel = q_idx - kv_idx
            return torch.where(h < n_local, rel.abs() < stride, rel % stride == 0)

        return mask


@register("flex_longformer", family="sparse", paper="2004.05150", complexity="O(N·(w+g)·d)", causal=True)
class FlexLongformerAttention(_FlexMixin, LongformerAttention):
    """``longformer``'s band plus global tokens as a FlexAttention block mask.

    Parameters:
        window: w: the band, keys within ⌊w/2⌋ of the query
        global_tokens: g: the first g tokens see, and are seen by, every token
    """

    def mask_mod(self, n: int, device: torch.device) -> Callable:
        half, g = self.window // 2, self.global_tokens
        return lambda b, h, q_idx, kv_idx: ((q_idx - kv_idx).abs() <= half) | (q_idx < g) | (kv_idx < g)


@register("flex_bigbird", family="sparse", paper="2007.14062", complexity="O(N·b·(5+r)·d)", causal=False)
class FlexBigBirdAttention(_FlexMixin, BigBirdAttention):
    """``bigbird``'s sliding, global and seeded random blocks as a FlexAttention block mask.

    Parameters:
        block: b: the block size
        random_blocks: r: random key blocks per query block
        seed: seed of the random blocks
    """

    per_head = True

    def mask_mod(self, n: int, device: torch.device) -> Callable:
        n_blocks = -(-n // self.block)
        table = torch.ones(self.heads, n_blocks, n_blocks, dtype=torch.bool)
        if not self.is_full(n):
            idx, _ = self.key_blocks(n)
            middle = torch.zeros(self.heads, n_blocks - 2, n_blocks, dtype=torch.bool)
            table[:, 1:-1] = middle.scatter_(2, idx, True)
        table = table.to(device)
        blk = self.block
        return lambda b, h, q_idx, kv_idx: table[h, q_idx // blk, kv_idx // blk]

"""A planted slowdown: a built-in variant made a known fraction slower, for
measuring whether ``attnbench compare RUN_A RUN_B`` finds a real change
(``benchmarks/repeatability.py --planted-slowdown``).

``PlantedSlowdown(base="linformer", extra=0.15)`` runs the base layer, then
keeps the cores busy with real work (small matrix products) for ``extra``
times the time the layer itself just took: after each forward, and after
each backward through it (the backward is bracketed by two identity autograd
functions that time it). So the slowdown is ``extra`` at every N and pass,
whatever the layer's fixed overheads, which a planted *amount* of work would
not give. With ``extra=0`` the code path is the same, minus the padding: the
A side of an A/B pair.

In a suite (run from the repository root, which is searched first):

    - name: benchmarks.planted:PlantedSlowdown
      label: planted
      params: {base: linformer, extra: 0.15}
"""

from __future__ import annotations

import time

import torch
from torch import nn

import attnbench

_SPIN = 16  # side of the matrices multiplied while padding: a few microseconds each


def _pad(seconds: float) -> None:
    """Compute (not sleep) for ``seconds``: the cores stay as busy as in the layer."""
    if seconds <= 0:
        return
    a = torch.ones(_SPIN, _SPIN)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)


class _Clock:
    def __init__(self) -> None:
        self.started = 0.0


class _BackwardEnd(torch.autograd.Function):
    """Identity on the input side: its backward runs last, and pads."""

    @staticmethod
    def forward(ctx, x, clock, extra):  # noqa: ANN001, ANN205
        ctx.clock, ctx.extra = clock, extra
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        _pad(ctx.extra * (time.perf_counter() - ctx.clock.started))
        return grad, None, None


class _BackwardStart(torch.autograd.Function):
    """Identity on the output side: its backward runs first, and starts the clock."""

    @staticmethod
    def forward(ctx, y, clock):  # noqa: ANN001, ANN205
        ctx.clock = clock
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        ctx.clock.started = time.perf_counter()
        return grad, None


class PlantedSlowdown(nn.Module):
    """A built-in variant (``base``, its default parameters) made ``extra`` slower."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, base: str = "linformer",
                 extra: float = 0.15) -> None:
        super().__init__()
        if extra < 0:
            raise ValueError(f"extra must be a fraction >= 0, got {extra}")
        self.inner = attnbench.build(base, dim=dim, heads=heads, seq_len=seq_len, causal=causal)
        self.extra = float(extra)

    def flops(self, batch: int, seq_len: int) -> int:
        return self.inner.flops(batch, seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clock = _Clock()
        t0 = time.perf_counter()
        y = _BackwardStart.apply(self.inner(_BackwardEnd.apply(x, clock, self.extra)), clock)
        _pad(self.extra * (time.perf_counter() - t0))
        return y

"""Helpers for testing variants: a float64 dense reference, one training step's
gradients, and a mechanical check that no hidden N×N tensor is created."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    allowed: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ s) v where ``allowed`` (broadcastable to (..., Nq, Nk), True =
    may attend) masks the logits. The reference every variant is checked against."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.records.append((str(func), tuple(t.shape)))
        return out


def training_step(layer: torch.nn.Module, x: torch.Tensor,
                  grad_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One backward pass of ``layer(x)`` with ``grad_out`` (ones if None) from cleared
    gradients: the output (still carrying its grad_fn), x's gradient and every
    parameter's gradient. x must require grad."""
    x.grad = None
    layer.zero_grad()
    y = layer(x)
    y.backward(torch.ones_like(y) if grad_out is None else grad_out)
    return y, x.grad.clone(), [p.grad.clone() for p in layer.parameters()]


def large_square_tensors(fn: Callable[[], Any], n: int) -> list[tuple[str, tuple[int, ...]]]:
    """Run ``fn`` and return every (op, shape) whose output has two dimensions >= n."""
    with ShapeRecorder() as rec:
        fn()
    return [(op, shape) for op, shape in rec.records if sum(1 for s in shape if s >= n) >= 2]


def assert_no_square(fn: Callable[[], Any], n: int) -> None:
    """Fail if ``fn`` creates any tensor with two dimensions of size >= n."""
    found = large_square_tensors(fn, n)
    assert not found, f"hidden N×N tensors (N={n}): {found[:5]}"

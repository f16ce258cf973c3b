"""Poolingformer (pooling.py): the invariants of VARIANTS.md in float64 against
explicit dense reference forms, the pooled-slot pattern, causal refused, no N×N."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square, dense_attention

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def core(n: int, **params):
    torch.manual_seed(0)
    return attnbench.build("poolingformer", dim=16, heads=2, seq_len=n, **params).core.to(F64)


def qkv(n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 2, n, 8, generator=g, dtype=F64) for _ in range(3))


def band(n: int, half: int) -> torch.Tensor:
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return (i - j).abs() <= half


def reference(c, q, k, v) -> torch.Tensor:
    """Dense: y under the band, then every slot's pooled key and value (loops over the
    slots) and each query's visible slots as a mask."""
    n = q.shape[-2]
    y = dense_attention(q, k, v, band(n, c.window // 2))
    if not c.pool_window:
        return y
    kappa, stride = min(c.pool_kernel, n), min(c.pool_stride, n)
    starts = list(range(0, n - kappa + 1, stride))
    k2, v2 = y @ c.proj_k2, y @ c.proj_v2
    if c.pool == "conv":
        taps = torch.softmax(c.pool_logits, dim=-1)[None, :, None, :]  # (1, H, 1, κ)
    slots = []
    for t in (k2, v2):
        pooled = []
        for s in starts:
            window = t[:, :, s:s + kappa]  # (B, H, κ, d)
            if c.pool == "mean":
                pooled.append(window.mean(2))
            elif c.pool == "max":
                pooled.append(window.amax(2))
            else:
                pooled.append((taps.transpose(-1, -2) * window).sum(2))
        slots.append(torch.stack(pooled, dim=2))
    half = c.pool_window // 2
    i = torch.arange(n)[:, None]
    s = torch.tensor(starts)[None, :]
    visible = (s >= i - half) & (s + kappa - 1 <= i + half)
    return y + dense_attention(y @ c.proj_q2, slots[0], slots[1], visible)


def test_registered_with_the_documented_parameters_and_refuses_causal():
    info = attnbench.variant_info("poolingformer")
    assert (info.family, info.paper, info.causal) == ("sparse", "2105.04371", False)
    assert info.defaults == {"window": 128, "pool_window": 512, "pool_kernel": 4, "pool_stride": 4, "pool": "mean"}
    with pytest.raises(ValueError, match="causal"):
        attnbench.build("poolingformer", dim=16, heads=2, seq_len=64, causal=True)


@pytest.mark.parametrize("params, match", [
    ({"pool": "avg"}, "pool must be one of"), ({"window": 0}, "poolingformer window"),
    ({"pool_window": 12, "pool_kernel": 4, "pool_stride": 4}, "pool_window"),
    ({"pool_kernel": 0}, "pool_kernel"), ({"pool_stride": -1}, "pool_stride"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        attnbench.build("poolingformer", dim=16, heads=2, seq_len=64, **params)


@pytest.mark.parametrize("n, window", [(64, 16), (70, 10), (64, 128)])
def test_without_its_second_level_it_is_local_attention(n, window):
    c = core(n, window=window, pool_window=0)
    q, k, v = qkv(n)
    local = attnbench.build("local", dim=16, heads=2, seq_len=n, window=window // 2).core.to(F64)
    torch.testing.assert_close(c(q, k, v), local(q, k, v), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v, band(n, window // 2)), rtol=1e-10, atol=1e-12)


def test_with_windows_past_2n_and_unit_pooling_it_is_y_plus_full_attention_over_y():
    n = 40
    c = core(n, window=2 * n, pool_window=2 * n, pool_kernel=1, pool_stride=1)
    q, k, v = qkv(n)
    y = dense_attention(q, k, v)  # full attention over x
    torch.testing.assert_close(c(q, k, v), y + dense_attention(y, y, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", ["mean", "max", "conv"])
@pytest.mark.parametrize("n, params", [
    (96, {"window": 16, "pool_window": 40, "pool_kernel": 4, "pool_stride": 4}),
    (101, {"window": 10, "pool_window": 30, "pool_kernel": 5, "pool_stride": 3}),  # overlapping slots
    (200, {"window": 32, "pool_window": 64, "pool_kernel": 2, "pool_stride": 6}),  # gaps between slots
])
def test_equals_the_dense_reference(n, params, pool):
    c = core(n, pool=pool, **params)
    with torch.no_grad():  # projections away from their identity start, conv taps away from the mean
        for p in (c.proj_q2, c.proj_k2, c.proj_v2):
            p.add_(0.3 * torch.randn_like(p))
        if c.pool_logits is not None:
            c.pool_logits.normal_()
    q, k, v = qkv(n)
    torch.testing.assert_close(c(q, k, v), reference(c, q, k, v), rtol=1e-10, atol=1e-12)


def test_no_square_at_the_defaults():
    n = 2048
    layer = attnbench.build("poolingformer", dim=32, heads=2, seq_len=n)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)
    assert layer.flops(1, 2 * n) / layer.flops(1, n) == pytest.approx(2.0, rel=0.05)

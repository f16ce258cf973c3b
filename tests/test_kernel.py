"""Efficient attention (kernel.py, "efficient"): the invariants of VARIANTS.md in
float64 against the explicit quadratic form, causal refused, no N×N."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square
from attnbench.variants.kernel import efficient_feature_maps

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def qkv(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, n, 16, generator=g, dtype=F64) for _ in range(3))


def test_registered_and_refuses_causal():
    info = attnbench.variant_info("efficient")
    assert (info.family, info.paper, info.causal, info.defaults) == ("kernel", "1812.01243", False, {})
    with pytest.raises(ValueError, match="causal"):
        attnbench.build("efficient", dim=48, heads=3, seq_len=64, causal=True)
    from attnbench.variants.kernel import EfficientAttention

    with pytest.raises(ValueError, match="causal"):
        EfficientAttention(3, 16, 64, causal=True)


@pytest.mark.parametrize("n", [1, 37, 64])
def test_equals_the_quadratic_form(n):
    q, k, v = qkv(n)
    core = attnbench.build("efficient", dim=48, heads=3, seq_len=n).core
    rho_q = torch.softmax(q, dim=-1)  # over each query's features
    rho_k = torch.exp(k) / torch.exp(k).sum(dim=-2, keepdim=True)  # each feature over the positions
    quadratic = (rho_q @ rho_k.transpose(-1, -2)) @ v  # the N×N matrix, explicitly
    torch.testing.assert_close(core(q, k, v), quadratic, rtol=1e-10, atol=1e-12)


def test_each_rho_k_column_sums_to_one_and_rho_q_rows_too():
    q, k, _ = qkv(50)
    rho_q, rho_k = efficient_feature_maps(q, k)
    torch.testing.assert_close(rho_k.sum(-2), torch.ones(2, 3, 16, dtype=F64))
    torch.testing.assert_close(rho_q.sum(-1), torch.ones(2, 3, 50, dtype=F64))


def test_no_square_and_linear_flops():
    n = 1024
    layer = attnbench.build("efficient", dim=32, heads=2, seq_len=n)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)
    assert layer.flops(1, 2 * n) / layer.flops(1, n) == pytest.approx(2.0, rel=0.02)

"""Kernel attention (attnbench.variants.kernel): linear attention (elu+1) and
efficient attention; the invariants of VARIANTS.md ("Change the order of the
products"), checked in float64 at small N, plus causality, the folded layer, the
no-N×N check, FLOPs growth and gradients."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square, training_step
from attnbench.variants.kernel import (
    _NonCausalKernelAttention,
    efficient_feature_maps,
    elu_feature_map,
    kernel_attention,
    recurrent_kernel_attention,
)
from tests.helpers import (
    check_causality,
    check_flops_grow_linearly,
    check_gradients_are_finite_and_reach_every_parameter,
    check_kernel_half_precision_is_close_to_float32,
    check_no_square,
    check_training_and_inference_paths_agree,
    f64_core,
    qkv,
    quadratic,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


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
    q, k, v = qkv(n=n)
    core = attnbench.build("efficient", dim=48, heads=3, seq_len=n).core
    rho_q = torch.softmax(q, dim=-1)  # over each query's features
    rho_k = torch.exp(k) / torch.exp(k).sum(dim=-2, keepdim=True)  # each feature over the positions
    quadratic = (rho_q @ rho_k.transpose(-1, -2)) @ v  # the N×N matrix, explicitly
    torch.testing.assert_close(core(q, k, v), quadratic, rtol=1e-10, atol=1e-12)


def test_each_rho_k_column_sums_to_one_and_rho_q_rows_too():
    q, k, _ = qkv(n=50)
    rho_q, rho_k = efficient_feature_maps(q, k)
    torch.testing.assert_close(rho_k.sum(-2), torch.ones(2, 3, 16, dtype=F64))
    torch.testing.assert_close(rho_q.sum(-1), torch.ones(2, 3, 50, dtype=F64))


def test_no_square_and_linear_flops():
    n = 1024
    layer = attnbench.build("efficient", dim=32, heads=2, seq_len=n)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)
    assert layer.flops(1, 2 * n) / layer.flops(1, n) == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("name, params", [
    ("linear", {"chunk": 0}), ("linear", {"chunk": True}), ("linear", {"features": 8}),
])
def test_bad_parameters(name, params):
    with pytest.raises(ValueError):
        attnbench.build(name, dim=32, heads=2, seq_len=64, **params)


# ---------------------------------------------------------------- linear

def test_linear_equals_the_quadratic_kernel_form():
    q, k, v = qkv(n=96)
    c = f64_core("linear", n=96)
    ref = quadratic(elu_feature_map(q), elu_feature_map(k), v, causal=False, eps=c.eps)
    torch.testing.assert_close(c(q, k, v), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 100, 128, 300])
def test_linear_causal_chunked_equals_lower_triangular_quadratic(chunk):
    q, k, v = qkv(n=100)
    c = f64_core("linear", n=100, causal=True, chunk=chunk)
    ref = quadratic(elu_feature_map(q), elu_feature_map(k), v, causal=True, eps=c.eps)
    torch.testing.assert_close(c(q, k, v), ref, rtol=1e-10, atol=1e-12)


def test_linear_recurrent_equals_parallel():
    q, k, v = qkv(n=64)
    c = f64_core("linear", n=64, causal=True, chunk=16)
    rec = recurrent_kernel_attention(elu_feature_map(q), elu_feature_map(k), v, eps=c.eps)
    torch.testing.assert_close(c(q, k, v), rec, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, params", [("linear", {})])
def test_training_and_inference_paths_agree(name, params):
    check_training_and_inference_paths_agree(name, params)


def test_noncausal_autograd_function_gradcheck():
    g = torch.Generator().manual_seed(1)
    phi_q, phi_k = (torch.rand(2, 2, 9, 5, generator=g, dtype=F64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 2, 9, 4, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: _NonCausalKernelAttention.apply(a, b, c, 1e-3),
                                    (phi_q, phi_k, v))
    x = torch.randn(3, 7, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(elu_feature_map, (x,))


@pytest.mark.parametrize("causal", [False, True])
def test_linear_gradients_match_the_quadratic_form(causal):
    q, k, v = (t.requires_grad_() for t in qkv(n=40))
    c = f64_core("linear", n=40, causal=causal, chunk=16)
    up = torch.randn(2, 3, 40, 16, dtype=F64)
    got = torch.autograd.grad(c(q, k, v), (q, k, v), up)
    phi = lambda t: torch.nn.functional.elu(t) + 1  # noqa: E731  plain autograd
    want = torch.autograd.grad(quadratic(phi(q), phi(k), v, causal, c.eps), (q, k, v), up)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def _unfolded(monkeypatch):
    """Make linear's layer project, run the core and project again, as every other core
    does (the reference for the folded form)."""
    from attnbench.variants.kernel import LinearAttention
    from attnbench.variants.layer import AttentionCore
    monkeypatch.setattr(LinearAttention, "whole_layer", AttentionCore.whole_layer)


@pytest.mark.parametrize("batch, n, heads, head_dim", [(2, 37, 3, 8), (1, 64, 4, 5)])
def test_linear_layer_with_the_projections_folded_equals_projections_and_core(
        batch, n, heads, head_dim, monkeypatch):
    torch.manual_seed(0)
    layer = attnbench.build("linear", dim=heads * head_dim, heads=heads, seq_len=n).to(F64)
    x = torch.randn(batch, n, heads * head_dim, dtype=F64, requires_grad=True)
    up = torch.randn(batch, n, heads * head_dim, dtype=F64)

    folded = training_step(layer, x, up)
    assert "LinearAttentionLayer" in type(folded[0].grad_fn).__name__  # the folded form ran
    _unfolded(monkeypatch)
    plain = training_step(layer, x, up)
    assert "LinearAttentionLayer" not in type(plain[0].grad_fn).__name__
    torch.testing.assert_close(folded[0], plain[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(folded[1], plain[1], rtol=1e-9, atol=1e-11)
    for a, b in zip(folded[2], plain[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("bias", [True, False])
def test_folded_linear_attention_layer_gradcheck(bias):
    from attnbench.variants.kernel import _LinearAttentionLayer

    g = torch.Generator().manual_seed(2)
    heads, head_dim, dim, dim_out = 2, 3, 4, 5
    x = torch.randn(2, 7, dim, generator=g, dtype=F64, requires_grad=True)
    w_qkv = torch.randn(3 * heads * head_dim, dim, generator=g, dtype=F64, requires_grad=True)
    w_out = torch.randn(dim_out, heads * head_dim, generator=g, dtype=F64, requires_grad=True)
    b = torch.randn(dim_out, generator=g, dtype=F64, requires_grad=True) if bias else None
    inputs = (x, w_qkv, w_out) + ((b,) if bias else ())
    assert torch.autograd.gradcheck(
        lambda x, w, wo, *rest: _LinearAttentionLayer.apply(x, w, wo, rest[0] if rest else None, heads, 1e-3),
        inputs)


@pytest.mark.parametrize("causal, dtype, autocast", [
    (True, torch.float32, False), (False, torch.bfloat16, False), (False, torch.float32, True)])
def test_linear_folds_only_non_causal_full_precision(causal, dtype, autocast):
    layer = attnbench.build("linear", dim=16, heads=2, seq_len=32, causal=causal).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(torch.randn(1, 32, 16, dtype=dtype, requires_grad=True))
    assert "LinearAttentionLayer" not in type(y.grad_fn).__name__


@pytest.mark.parametrize("name, causal, params", [("linear", True, {}), ("linear", False, {})])
def test_kernel_half_precision_is_close_to_float32(name, causal, params):
    check_kernel_half_precision_is_close_to_float32(name, causal, params)


@pytest.mark.parametrize("name, params", [("linear", {"chunk": 8})])
def test_causality(name, params):
    check_causality(name, params)


@pytest.mark.parametrize("name, causal, params", [("linear", False, {"chunk": 32}), ("linear", True, {"chunk": 32})])
def test_no_square_tensor_in_forward_and_backward(name, causal, params):
    check_no_square(name, causal, params, 1024)


@pytest.mark.parametrize("name, causal, params", [("linear", False, {}), ("linear", True, {})])
def test_flops_grow_linearly(name, causal, params):
    check_flops_grow_linearly(name, causal, params)


@pytest.mark.parametrize("name, causal, params", [("linear", False, {}), ("linear", True, {"chunk": 16})])
def test_gradients_are_finite_and_reach_every_parameter(name, causal, params):
    check_gradients_are_finite_and_reach_every_parameter(name, causal, params)


def test_kernel_attention_pads_odd_lengths_without_leaking():
    """Padding to a whole number of chunks must not add keys: compare with N=1."""
    q, k, v = qkv(n=1)
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    out = kernel_attention(phi_q, phi_k, v, causal=True, chunk=4, eps=0.0)
    torch.testing.assert_close(out, v)

"""Nyströmformer, linear attention (elu+1) and Performer (FAVOR+): the invariants of
VARIANTS.md ("Fewer keys", "Change the order of the products"), checked in float64
at small N, plus causality, the no-N×N check, FLOPs growth and gradients."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square, dense_attention, training_step
from attnbench.variants import layer as layer_module
from attnbench.variants.kernel import (
    _NonCausalKernelAttention,
    elu_feature_map,
    kernel_attention,
    recurrent_kernel_attention,
)
from attnbench.variants.lowrank import NystromAttention, newton_pinv, segment_means
from attnbench.variants.random_features import PerformerAttention, orthogonal_gaussian_matrix

F64 = torch.float64


# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


def qkv(b: int = 2, h: int = 3, n: int = 64, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g, dtype=F64) for _ in range(3))


def core(name: str, n: int = 64, heads: int = 3, head_dim: int = 16, causal: bool = False, **params):
    layer = attnbench.build(name, dim=heads * head_dim, heads=heads, seq_len=n, causal=causal, **params)
    return layer.core.to(F64)


def quadratic(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, causal: bool,
              eps: float = 0.0) -> torch.Tensor:
    """The normalised kernel form with the N×N matrix: (A v) / (A 1), A = φ(q) φ(k)ᵀ."""
    a = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        a = a.tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


# ---------------------------------------------------------------- registry, params

def test_registered_with_the_documented_parameters():
    info = {name: attnbench.variant_info(name) for name in ("nystrom", "linear", "performer")}
    assert info["nystrom"].defaults == {"landmarks": 64, "pinv_iters": 6, "conv": 0}
    assert info["linear"].defaults == {"chunk": 64}
    assert info["performer"].defaults == {"features": 256, "chunk": 64, "seed": 0}
    expected = {"nystrom": ("lowrank", "2102.03902", False), "linear": ("kernel", "2006.16236", True),
                "performer": ("kernel", "2009.14794", True)}
    for name, (family, paper, causal) in expected.items():
        assert (info[name].family, info[name].paper, info[name].causal) == (family, paper, causal)


@pytest.mark.parametrize("name", ["nystrom", "linformer"])
def test_refuses_causal(name):
    with pytest.raises(ValueError, match="causal"):
        attnbench.build(name, dim=32, heads=2, seq_len=64, causal=True)


@pytest.mark.parametrize("name, params", [
    ("nystrom", {"landmarks": 0}), ("nystrom", {"landmarks": 2.5}), ("nystrom", {"pinv_iters": -1}),
    ("nystrom", {"conv": 4}), ("nystrom", {"conv": -3}), ("nystrom", {"window": 3}),
    ("linear", {"chunk": 0}), ("linear", {"chunk": True}), ("linear", {"features": 8}),
    ("performer", {"features": 0}), ("performer", {"chunk": -1}), ("performer", {"seed": "a"}),
])
def test_bad_parameters(name, params):
    with pytest.raises(ValueError):
        attnbench.build(name, dim=32, heads=2, seq_len=64, **params)


# ---------------------------------------------------------------- nystrom

def test_nystrom_with_all_landmarks_and_exact_pinv_is_full_attention():
    q, k, v = qkv(n=64)
    c = core("nystrom", n=64, landmarks=64)
    c.pinv = torch.linalg.pinv  # test hook: an exact pseudo-inverse
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v), rtol=1e-9, atol=1e-9)


def test_nystrom_newton_pinv_converges_to_full_attention():
    q, k, v = qkv(n=32)
    c = core("nystrom", n=32, landmarks=32, pinv_iters=40)
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v), rtol=1e-8, atol=1e-8)


def test_newton_pinv_matches_linalg_pinv_and_improves_with_iterations():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(4, 16, 16, generator=g, dtype=F64), dim=-1)
    eye = torch.eye(16, dtype=F64)
    # With Z₀ ∝ Aᵀ, AZ is symmetric and each iteration maps the residual R = I − AZ to
    # R³(3I + R)/4, with the eigenvalues of R in [0, 1): ‖R‖ shrinks at every step.
    residuals = [torch.linalg.matrix_norm(eye - a @ newton_pinv(a, it)).max().item()
                 for it in (0, 1, 2, 4, 8)]
    assert residuals == sorted(residuals, reverse=True), residuals
    torch.testing.assert_close(newton_pinv(a, 40), torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)


def test_newton_pinv_is_per_matrix():
    """The initial scale is taken per matrix: one batch item cannot move another."""
    a = torch.softmax(torch.randn(2, 8, 8, dtype=F64), dim=-1)
    b = a.clone()
    b[1] = torch.softmax(10 * torch.randn(8, 8, dtype=F64), dim=-1)
    torch.testing.assert_close(newton_pinv(a, 6)[0], newton_pinv(b, 6)[0], rtol=0, atol=0)


@pytest.mark.parametrize("n, m", [(64, 16), (10, 3), (100, 16), (67, 64)])
def test_segment_means_cover_every_token_once(n, m):
    x = torch.randn(2, n, 4, dtype=F64)
    means = segment_means(x, m)
    bounds = [i * n // m for i in range(m + 1)]
    expected = torch.stack([x[:, bounds[i]:bounds[i + 1]].mean(1) for i in range(m)], dim=1)
    torch.testing.assert_close(means, expected)


def test_nystrom_uneven_segments_and_fewer_tokens_than_landmarks():
    q, k, v = qkv(n=50)
    out = core("nystrom", n=50, landmarks=16)(q, k, v)
    assert out.shape == v.shape and torch.isfinite(out).all()
    # N < m: m = N landmarks, so with an exact pinv it is full attention again.
    c = core("nystrom", n=50, landmarks=64)
    c.pinv = torch.linalg.pinv
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v), rtol=1e-9, atol=1e-9)


def test_nystrom_conv_residual_adds_a_depthwise_convolution_of_v():
    q, k, v = qkv(n=32)
    c = core("nystrom", n=32, landmarks=32, conv=5)
    c.pinv = torch.linalg.pinv
    weight = c.res_conv.weight  # (heads, 1, 5, 1)
    conv = torch.nn.functional.conv2d(v, weight, padding=(2, 0), groups=3)
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v) + conv, rtol=1e-9, atol=1e-9)


def test_nystrom_half_precision_is_close_to_float32():
    q, k, v = (t.float() for t in qkv(n=128))
    c = attnbench.build("nystrom", dim=48, heads=3, seq_len=128, landmarks=16).core
    ref = c(q, k, v)
    out = c(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- linear

def test_linear_equals_the_quadratic_kernel_form():
    q, k, v = qkv(n=96)
    c = core("linear", n=96)
    ref = quadratic(elu_feature_map(q), elu_feature_map(k), v, causal=False, eps=c.eps)
    torch.testing.assert_close(c(q, k, v), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 100, 128, 300])
def test_linear_causal_chunked_equals_lower_triangular_quadratic(chunk):
    q, k, v = qkv(n=100)
    c = core("linear", n=100, causal=True, chunk=chunk)
    ref = quadratic(elu_feature_map(q), elu_feature_map(k), v, causal=True, eps=c.eps)
    torch.testing.assert_close(c(q, k, v), ref, rtol=1e-10, atol=1e-12)


def test_linear_recurrent_equals_parallel():
    q, k, v = qkv(n=64)
    c = core("linear", n=64, causal=True, chunk=16)
    rec = recurrent_kernel_attention(elu_feature_map(q), elu_feature_map(k), v, eps=c.eps)
    torch.testing.assert_close(c(q, k, v), rec, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, params", [("linear", {}), ("performer", {"features": 24})])
def test_training_and_inference_paths_agree(name, params):
    """Without gradients the non-causal form skips the row-major copy of v."""
    q, k, v = qkv(n=48)
    c = core(name, n=48, **params)
    with torch.no_grad():
        inference = c(q, k, v)
    training = c(*(t.clone().requires_grad_() for t in (q, k, v)))
    torch.testing.assert_close(training.detach(), inference, rtol=1e-12, atol=1e-13)


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
    c = core("linear", n=40, causal=causal, chunk=16)
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


# ---------------------------------------------------------------- performer

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [5, 32, 64, 200])
def test_performer_equals_the_quadratic_kernel_form(causal, chunk):
    q, k, v = qkv(n=100)
    c = core("performer", n=100, causal=causal, features=32, chunk=chunk)
    c.eps = 0.0  # the stabilisers cancel exactly; eps is the only thing they scale
    ref = quadratic(c.feature_map(q), c.feature_map(k), v, causal=causal)
    torch.testing.assert_close(c(q, k, v), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_gradients_match_the_quadratic_form(causal):
    q, k, v = (t.requires_grad_() for t in qkv(n=40))
    c = core("performer", n=40, causal=causal, features=16, chunk=16)
    c.eps = 0.0
    up = torch.randn(2, 3, 40, 16, dtype=F64)
    got = torch.autograd.grad(c(q, k, v), (q, k, v), up)
    want = torch.autograd.grad(quadratic(c.feature_map(q), c.feature_map(k), v, causal), (q, k, v), up)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_head_groups_change_nothing(causal, monkeypatch):
    q, k, v = (t.requires_grad_() for t in qkv(n=40))
    c = core("performer", n=40, causal=causal, features=16, chunk=16)
    up = torch.randn(2, 3, 40, 16, dtype=F64)
    whole = c(q, k, v)
    grads = torch.autograd.grad(whole, (q, k, v), up)
    monkeypatch.setattr(layer_module, "CPU_WORKSPACE_BYTES", 1)  # one head of one row at a time
    grouped = c(q, k, v)
    torch.testing.assert_close(grouped, whole, rtol=1e-12, atol=1e-13)
    for a, b in zip(torch.autograd.grad(grouped, (q, k, v), up), grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_performer_recurrent_equals_parallel():
    q, k, v = qkv(n=64)
    c = core("performer", n=64, causal=True, features=24, chunk=16)
    c.eps = 0.0
    rec = recurrent_kernel_attention(c.feature_map(q), c.feature_map(k), v, eps=0.0)
    torch.testing.assert_close(c(q, k, v), rec, rtol=1e-9, atol=1e-11)


def test_performer_causal_result_does_not_depend_on_chunk_with_eps():
    q, k, v = qkv(n=90)
    outs = [core("performer", n=90, causal=True, features=32, chunk=c)(q, k, v) for c in (1, 8, 64, 90)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-10, atol=1e-12)


def test_performer_kernel_estimate_approaches_softmax_kernel():
    d, n = 16, 24
    g = torch.Generator().manual_seed(3)
    q = 0.6 * torch.randn(1, 1, n, d, generator=g, dtype=F64)
    k = 0.6 * torch.randn(1, 1, n, d, generator=g, dtype=F64)
    exact = torch.exp(q @ k.transpose(-1, -2) / d ** 0.5)
    errors = []
    for m in (16, 128, 1024):
        err = 0.0
        for seed in range(3):
            c = PerformerAttention(heads=1, head_dim=d, seq_len=n, features=m, seed=seed).to(F64)
            est = c.feature_map(q) @ c.feature_map(k).transpose(-1, -2)
            err += ((est - exact).abs() / exact).mean().item() / 3
        errors.append(err)
    # Monte Carlo: the relative error falls like m^-1/2 (a factor 8 from 16 to 1024).
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.15 and errors[-1] < errors[0] / 4, errors


def test_orthogonal_gaussian_matrix_blocks_are_orthogonal():
    w = orthogonal_gaussian_matrix(40, 16, torch.Generator().manual_seed(0)).double()
    assert w.shape == (40, 16)
    for block in (w[:16], w[16:32], w[32:]):
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(gram.diagonal()), torch.zeros_like(gram),
                                   atol=1e-4, rtol=0)
    # row norms chi(16): mean ≈ 3.94, not all equal
    norms = w.norm(dim=1)
    assert 2.5 < norms.mean() < 5.5 and norms.std() > 0.1


def test_performer_same_seed_is_identical_and_leaves_the_global_rng_alone():
    q, k, v = (t.float() for t in qkv(n=64))
    state = torch.get_rng_state()
    a = PerformerAttention(heads=3, head_dim=16, seq_len=64, features=32, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # a different global state changes nothing
    b = PerformerAttention(heads=3, head_dim=16, seq_len=64, features=32, seed=7)
    c = PerformerAttention(heads=3, head_dim=16, seq_len=64, features=32, seed=8)
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)
    assert torch.equal(a(q, k, v), b(q, k, v))
    assert "projection" in dict(a.named_buffers())


def test_performer_is_stable_for_large_inputs():
    q, k, v = (30 * t.float() for t in qkv(n=64))
    for causal in (False, True):
        out = attnbench.build("performer", dim=48, heads=3, seq_len=64, causal=causal, features=32).core(q, k, v)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, causal, params", [
    ("performer", True, {"features": 32}), ("performer", False, {"features": 32}),
    ("linear", True, {}), ("linear", False, {}),
])
def test_kernel_half_precision_is_close_to_float32(name, causal, params):
    q, k, v = (t.float() for t in qkv(n=128))
    c = attnbench.build(name, dim=48, heads=3, seq_len=128, causal=causal, **params).core
    out = c(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), c(q, k, v), rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- all three

@pytest.mark.parametrize("name, params", [
    ("linear", {"chunk": 8}), ("performer", {"features": 32, "chunk": 8}),
    ("performer", {"features": 32, "chunk": 1}),
])
def test_causality(name, params):
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=48, causal=True, **params).to(F64)
    x = torch.randn(1, 48, 32, dtype=F64)
    for t in (0, 5, 20, 47):
        y = layer(x)
        x2 = x.clone()
        x2[:, t + 1:] = 10 * torch.randn_like(x2[:, t + 1:])  # large: would move a global stabiliser
        torch.testing.assert_close(layer(x2)[:, :t + 1], y[:, :t + 1], rtol=1e-12, atol=1e-13)


NO_SQUARE_CASES = [
    ("linear", False, {"chunk": 32}), ("linear", True, {"chunk": 32}),
    ("performer", False, {"features": 32, "chunk": 32}), ("performer", True, {"features": 32, "chunk": 32}),
    ("nystrom", False, {"landmarks": 16}), ("nystrom", False, {"landmarks": 16, "conv": 33}),
]


@pytest.mark.parametrize("name, causal, params", NO_SQUARE_CASES)
def test_no_square_tensor_in_forward_and_backward(name, causal, params):
    _check_no_square(name, causal, params, 1024)


@pytest.mark.parametrize("name, causal, params", [NO_SQUARE_CASES[3], NO_SQUARE_CASES[4]])
def test_no_square_tensor_with_uneven_chunks_and_segments(name, causal, params):
    _check_no_square(name, causal, params, 1000)


def _check_no_square(name: str, causal: bool, params: dict, n: int) -> None:
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, causal=causal, **params)
    x = torch.randn(1, n, 32, requires_grad=True)

    def step():
        layer(x).sum().backward()

    assert_no_square(step, n)


@pytest.mark.parametrize("name, causal, params", [
    ("linear", False, {}), ("linear", True, {}), ("performer", False, {}), ("performer", True, {}),
    ("nystrom", False, {}), ("nystrom", False, {"conv": 33}),
])
def test_flops_grow_linearly(name, causal, params):
    layer = attnbench.build(name, dim=512, heads=8, seq_len=4096, causal=causal, **params)
    # Nyström's m³ pseudo-inverse is a constant: its ratio approaches 2 from below.
    for n in (4096, 8192):
        ratio = layer.core.flops(1, 2 * n) / layer.core.flops(1, n)
        assert 1.85 < ratio <= 2.0 + 1e-9, (n, ratio)
        assert 1.9 < layer.flops(1, 2 * n) / layer.flops(1, n) <= 2.0 + 1e-9
    assert layer.core.flops(2, 4096) == 2 * layer.core.flops(1, 4096)
    softmax = attnbench.build("softmax", dim=512, heads=8, seq_len=4096).core.flops(1, 4096)
    assert layer.core.flops(1, 4096) < softmax / 4  # sub-quadratic at this N


@pytest.mark.parametrize("name, causal, params", [
    ("linear", False, {}), ("linear", True, {"chunk": 16}),
    ("performer", False, {"features": 32}), ("performer", True, {"features": 32, "chunk": 16}),
    ("nystrom", False, {"landmarks": 8}), ("nystrom", False, {"landmarks": 8, "conv": 5}),
])
def test_gradients_are_finite_and_reach_every_parameter(name, causal, params):
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=60, causal=causal, **params)
    x = torch.randn(2, 60, 32, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_kernel_attention_pads_odd_lengths_without_leaking():
    """Padding to a whole number of chunks must not add keys: compare with N=1."""
    q, k, v = qkv(n=1)
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    out = kernel_attention(phi_q, phi_k, v, causal=True, chunk=4, eps=0.0)
    torch.testing.assert_close(out, v)


def test_nystrom_core_class_refuses_causal_directly():
    with pytest.raises(ValueError):
        NystromAttention(heads=2, head_dim=16, seq_len=64, causal=True)

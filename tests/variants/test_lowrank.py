"""Low-rank attention (attnbench.variants.lowrank): Linformer, Nyströmformer and
compressed attention, checked in float64 at small N against full attention,
plus causality, the no-N×N check, FLOPs growth and gradients."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square, dense_attention, training_step
from attnbench.variants.lowrank import CompressedAttention, NystromAttention, newton_pinv, segment_means
from tests.helpers import (
    check_flops_grow_linearly,
    check_gradients_are_finite_and_reach_every_parameter,
    check_no_square,
    f64_core,
    qkv,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def core(n: int = 48, heads: int = 3, head_dim: int = 8, causal: bool = False, **params) -> CompressedAttention:
    layer = attnbench.build("compressed", dim=heads * head_dim, heads=heads, seq_len=n, causal=causal, **params)
    c = layer.core.to(F64)
    with torch.no_grad():  # the learned null slot, non-zero so that it counts
        c.null_k.normal_()
        c.null_v.normal_()
    return c


def test_registered_with_the_documented_parameters():
    info = attnbench.variant_info("compressed")
    assert (info.family, info.paper, info.causal, info.defaults) == ("lowrank", "1801.10198", True, {"factor": 3})


@pytest.mark.parametrize("factor", [0, -1, 1.5, True])
def test_bad_factor_is_a_value_error(factor):
    with pytest.raises(ValueError, match="compressed factor"):
        attnbench.build("compressed", dim=16, heads=2, seq_len=16, factor=factor)


@pytest.mark.parametrize("causal", [False, True])
def test_factor_one_with_identity_convolution_is_full_attention_with_the_null_slot(causal):
    c = core(causal=causal, factor=1)
    with torch.no_grad():
        for conv in (c.compress_k, c.compress_v):
            conv.weight.copy_(torch.eye(conv.weight.shape[0], dtype=F64))
            conv.bias.zero_()
    q, k, v = qkv(n=48, d=8)
    null_k, null_v = (p.expand(2, 3, 1, 8) for p in (c.null_k, c.null_v))
    keys, values = torch.cat([null_k, k], dim=2), torch.cat([null_v, v], dim=2)
    allowed = None
    if causal:  # the null slot (column 0) always, key j (column j + 1) when j <= i
        allowed = torch.arange(49)[None, :] - 1 <= torch.arange(48)[:, None]
    torch.testing.assert_close(c(q, k, v), dense_attention(q, keys, values, allowed), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [48, 50])  # 50: the last slot is zero-padded
def test_equals_a_strided_conv1d_over_keys_and_values(n, causal):
    factor, heads, d = 3, 3, 8
    c = core(n=n, causal=causal, factor=factor)
    q, k, v = qkv(n=n, d=8)
    dim = heads * d

    def conv(t: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:  # the paper's convolution
        weight = lin.weight.view(dim, factor, dim).permute(0, 2, 1)  # (out, in, taps)
        x = t.transpose(1, 2).reshape(2, n, dim).transpose(1, 2)  # (B, dim, N)
        x = torch.nn.functional.pad(x, (0, -n % factor))
        y = torch.nn.functional.conv1d(x, weight, lin.bias, stride=factor)  # (B, dim, slots)
        return y.view(2, heads, d, -1).transpose(-1, -2)

    slots = -(-n // factor)
    keys = torch.cat([c.null_k.expand(2, 3, 1, d), conv(k, c.compress_k)], dim=2)
    values = torch.cat([c.null_v.expand(2, 3, 1, d), conv(v, c.compress_v)], dim=2)
    allowed = None
    if causal:  # slot s: every position f·s … f·s + f − 1 must be <= i
        last = torch.cat([torch.tensor([-1]), torch.arange(slots) * factor + factor - 1])
        allowed = last[None, :] <= torch.arange(n)[:, None]
    torch.testing.assert_close(c(q, k, v), dense_attention(q, keys, values, allowed), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_causal_never_sees_a_later_position(factor):
    torch.manual_seed(0)
    layer = attnbench.build("compressed", dim=24, heads=3, seq_len=50, causal=True, factor=factor).to(F64)
    x = torch.randn(1, 50, 24, dtype=F64)
    y = layer(x)
    for t in (0, 1, 2, 3, 20, 48):
        x2 = x.clone()
        x2[:, t + 1:] = 10 * torch.randn_like(x2[:, t + 1:])
        torch.testing.assert_close(layer(x2)[:, :t + 1], y[:, :t + 1], rtol=1e-12, atol=1e-13)


def test_flops_grow_quadratically_and_the_null_slot_starts_at_zero():
    layer = attnbench.build("compressed", dim=64, heads=4, seq_len=64)
    assert torch.count_nonzero(layer.core.null_k) == 0 and torch.count_nonzero(layer.core.null_v) == 0
    # N·N/f scores dominate at large N: about 4x per doubling
    assert 3.5 < layer.flops(1, 16384) / layer.flops(1, 8192) <= 4.0


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("batch, n", [(2, 50), (1, 48)])
def test_folded_layer_equals_projections_then_core(batch, n, causal, monkeypatch):
    # whole_layer folds each convolution into its projection; the reference is the
    # standard path (project, compress, attend, project), output and every gradient.
    from attnbench.variants.layer import AttentionCore

    torch.manual_seed(0)
    layer = attnbench.build("compressed", dim=24, heads=3, seq_len=n, causal=causal).to(F64)
    with torch.no_grad():
        layer.core.null_k.normal_()
        layer.core.null_v.normal_()
    x = torch.randn(batch, n, 24, dtype=F64, requires_grad=True)
    up = torch.randn(batch, n, 24, dtype=F64)
    folded = training_step(layer, x, up)
    monkeypatch.setattr(CompressedAttention, "whole_layer", AttentionCore.whole_layer)
    plain = training_step(layer, x, up)
    for a, b in zip([folded[0], folded[1], *folded[2]], [plain[0], plain[1], *plain[2]], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("perm", [False, True])
def test_linformer_with_identity_or_permutation_projection_is_full_attention(perm):
    n = 64
    core = attnbench.build("linformer", dim=32, heads=2, seq_len=n, k=n).core.double()
    eye = torch.eye(n, dtype=torch.float64)
    if perm:
        eye = eye[torch.randperm(n)]
    with torch.no_grad():
        core.proj_k.copy_(eye)
        core.proj_v.copy_(eye)
    q, k, v = qkv(h=2, n=n, seed=1)
    torch.testing.assert_close(core(q, k, v), dense_attention(q, k, v))


def test_linformer_refuses_causal_and_wrong_length():
    with pytest.raises(ValueError, match="causal"):
        attnbench.build("linformer", dim=32, heads=2, seq_len=64, causal=True)
    layer = attnbench.build("linformer", dim=32, heads=2, seq_len=64, k=16)
    with pytest.raises(ValueError, match="seq_len 64"):
        layer(torch.randn(1, 32, 32))


@pytest.mark.parametrize("name,params", [("linformer", {"k": 32})])
def test_no_hidden_square_tensor(name, params):
    n = 1024
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, **params)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)


@pytest.mark.parametrize("name", ["nystrom", "linformer"])
def test_refuses_causal(name):
    with pytest.raises(ValueError, match="causal"):
        attnbench.build(name, dim=32, heads=2, seq_len=64, causal=True)


@pytest.mark.parametrize("name, params", [
    ("nystrom", {"landmarks": 0}), ("nystrom", {"landmarks": 2.5}), ("nystrom", {"pinv_iters": -1}),
    ("nystrom", {"conv": 4}), ("nystrom", {"conv": -3}), ("nystrom", {"window": 3}),
])
def test_bad_parameters(name, params):
    with pytest.raises(ValueError):
        attnbench.build(name, dim=32, heads=2, seq_len=64, **params)


# ---------------------------------------------------------------- nystrom

def test_nystrom_with_all_landmarks_and_exact_pinv_is_full_attention():
    q, k, v = qkv(n=64)
    c = f64_core("nystrom", n=64, landmarks=64)
    c.pinv = torch.linalg.pinv  # test hook: an exact pseudo-inverse
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v), rtol=1e-9, atol=1e-9)


def test_nystrom_newton_pinv_converges_to_full_attention():
    q, k, v = qkv(n=32)
    c = f64_core("nystrom", n=32, landmarks=32, pinv_iters=40)
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
    out = f64_core("nystrom", n=50, landmarks=16)(q, k, v)
    assert out.shape == v.shape and torch.isfinite(out).all()
    # N < m: m = N landmarks, so with an exact pinv it is full attention again.
    c = f64_core("nystrom", n=50, landmarks=64)
    c.pinv = torch.linalg.pinv
    torch.testing.assert_close(c(q, k, v), dense_attention(q, k, v), rtol=1e-9, atol=1e-9)


def test_nystrom_conv_residual_adds_a_depthwise_convolution_of_v():
    q, k, v = qkv(n=32)
    c = f64_core("nystrom", n=32, landmarks=32, conv=5)
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


@pytest.mark.parametrize("name, causal, params", [
    ("nystrom", False, {"landmarks": 16}), ("nystrom", False, {"landmarks": 16, "conv": 33}),
])
def test_no_square_tensor_in_forward_and_backward(name, causal, params):
    check_no_square(name, causal, params, 1024)


@pytest.mark.parametrize("name, causal, params", [("nystrom", False, {"landmarks": 16})])
def test_no_square_tensor_with_uneven_chunks_and_segments(name, causal, params):
    check_no_square(name, causal, params, 1000)


@pytest.mark.parametrize("name, causal, params", [("nystrom", False, {}), ("nystrom", False, {"conv": 33})])
def test_flops_grow_linearly(name, causal, params):
    check_flops_grow_linearly(name, causal, params)


@pytest.mark.parametrize("name, causal, params", [
    ("nystrom", False, {"landmarks": 8}), ("nystrom", False, {"landmarks": 8, "conv": 5}),
])
def test_gradients_are_finite_and_reach_every_parameter(name, causal, params):
    check_gradients_are_finite_and_reach_every_parameter(name, causal, params)


def test_nystrom_core_class_refuses_causal_directly():
    with pytest.raises(ValueError):
        NystromAttention(heads=2, head_dim=16, seq_len=64, causal=True)

"""Random-feature attention (attnbench.variants.random_features): Performer
(FAVOR+) and RFA against the quadratic kernel form in float64 at small N, their
feature maps and kernel estimates, causality, the no-N×N check, FLOPs growth and
gradients."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square
from attnbench.variants import layer as layer_module
from attnbench.variants.kernel import (
    DEFAULT_EPS,
    recurrent_kernel_attention,
)
from attnbench.variants.random_features import PerformerAttention, orthogonal_gaussian_matrix
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


def layer(n: int = 48, causal: bool = False, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return attnbench.build("rfa", dim=24, heads=3, seq_len=n, causal=causal, **params).to(F64)


def gated_recurrence(phi_q, phi_k, v, gates, eps=DEFAULT_EPS):
    """S_t = g_t S_{t−1} + (1 − g_t) φ(k_t) v_tᵀ, z likewise, token by token."""
    state = phi_k.new_zeros(phi_k.shape[:-2] + (phi_k.shape[-1], v.shape[-1]))
    norm = phi_k.new_zeros(phi_k.shape[:-2] + (phi_k.shape[-1],))
    outs = []
    for t in range(phi_q.shape[-2]):
        g = gates[..., t, None]
        state = g[..., None] * state + (1 - g[..., None]) * phi_k[..., t, :, None] * v[..., t, None, :]
        norm = g * norm + (1 - g) * phi_k[..., t, :]
        q_t = phi_q[..., t, :]
        outs.append(torch.einsum("...f,...fd->...d", q_t, state) / ((q_t * norm).sum(-1, keepdim=True) + eps))
    return torch.stack(outs, dim=-2)


def test_registered_with_the_documented_parameters():
    info = attnbench.variant_info("rfa")
    assert (info.family, info.paper, info.causal) == ("kernel", "2103.02143", True)
    assert info.defaults == {"features": 128, "sigma": 1.0, "gate": False, "chunk": 64, "seed": 0}


@pytest.mark.parametrize("params, match", [
    ({"features": 0}, "rfa features"), ({"sigma": 0}, "rfa sigma"), ({"sigma": float("nan")}, "rfa sigma"),
    ({"gate": "yes"}, "rfa gate"), ({"gate": True}, "needs causal"), ({"chunk": 0}, "rfa chunk"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        attnbench.build("rfa", dim=24, heads=3, seq_len=16, **params)


@pytest.mark.parametrize("causal, chunk", [(False, 64), (True, 1), (True, 7), (True, 16), (True, 100)])
def test_linear_form_equals_the_quadratic_kernel_form(causal, chunk):
    c = layer(causal=causal, chunk=chunk, features=32).core
    q, k, v = qkv(n=48, d=8)
    expected = quadratic(c.feature_map(q), c.feature_map(k), v, causal, eps=DEFAULT_EPS)
    torch.testing.assert_close(c(q, k, v), expected, rtol=1e-9, atol=1e-10)


def test_features_are_random_fourier_features_of_the_normalised_inputs():
    c = layer(features=16, sigma=0.5).core
    x = torch.randn(5, 8, dtype=F64)
    proj = (x / x.norm(dim=-1, keepdim=True)) @ c.projection.to(F64).T / 0.5
    expected = torch.cat([proj.sin(), proj.cos()], dim=-1) / 4.0
    torch.testing.assert_close(c.feature_map(x), expected)


@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_kernel_estimate_approaches_the_gaussian_kernel(sigma):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 40, 8, generator=g, dtype=F64)
    qn, kn = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    exact = torch.exp(-torch.cdist(qn, kn) ** 2 / (2 * sigma ** 2))
    errors = []
    for features in (16, 256, 8192):
        c = attnbench.build("rfa", dim=8, heads=1, seq_len=40, features=features, sigma=sigma).core.to(F64)
        errors.append((c.feature_map(q) @ c.feature_map(k).T - exact).abs().mean().item())
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.02, errors


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_gated_chunked_form_equals_the_token_by_token_recurrence(chunk):
    c = layer(causal=True, gate=True, chunk=chunk, features=16).core
    q, k, v = qkv(n=48, d=8)
    logits = 2 * torch.randn(2, 3, 48, dtype=F64)
    expected = gated_recurrence(c.feature_map(q), c.feature_map(k), v, torch.sigmoid(logits))
    torch.testing.assert_close(c(q, k, v, gate_logits=logits), expected, rtol=1e-9, atol=1e-10)


def test_gated_layer_reads_its_gates_from_the_input_and_its_gradients_match_the_recurrence():
    lay = layer(n=20, causal=True, gate=True, chunk=8, features=8)
    x = torch.randn(2, 20, 24, dtype=F64, requires_grad=True)
    c = lay.core

    def reference(x):
        q, k, v = lay.qkv(x).view(2, 20, 3, 3, 8).permute(2, 0, 3, 1, 4)
        gates = torch.sigmoid(c.gate_proj(x)).transpose(1, 2)
        out = gated_recurrence(c.feature_map(q), c.feature_map(k), v, gates)
        return lay.out(out.transpose(1, 2).reshape(2, 20, 24))

    up = torch.randn(2, 20, 24, dtype=F64)
    got = torch.autograd.grad((lay(x) * up).sum(), [x, *lay.parameters()])
    want = torch.autograd.grad((reference(x) * up).sum(), [x, *lay.parameters()])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="call the layer"):
        c(*qkv(n=20, d=8))


@pytest.mark.parametrize("gate", [False, True])
def test_causality(gate):
    lay = layer(causal=True, gate=gate, chunk=8, features=16)
    x = torch.randn(1, 48, 24, dtype=F64)
    y = lay(x)
    for t in (0, 5, 20, 47):
        x2 = x.clone()
        x2[:, t + 1:] = 10 * torch.randn_like(x2[:, t + 1:])
        torch.testing.assert_close(lay(x2)[:, :t + 1], y[:, :t + 1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal, gate", [(False, False), (True, False), (True, True)])
def test_no_square_and_linear_flops(causal, gate):
    n = 1024
    lay = attnbench.build("rfa", dim=32, heads=2, seq_len=n, causal=causal, gate=gate, features=32, chunk=32)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: lay(x).sum().backward(), n)
    assert lay.flops(1, 2 * n) / lay.flops(1, n) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("name, params", [
    ("performer", {"features": 0}), ("performer", {"chunk": -1}), ("performer", {"seed": "a"}),
])
def test_bad_performer_parameters(name, params):
    with pytest.raises(ValueError):
        attnbench.build(name, dim=32, heads=2, seq_len=64, **params)


@pytest.mark.parametrize("name, params", [("performer", {"features": 24})])
def test_training_and_inference_paths_agree(name, params):
    check_training_and_inference_paths_agree(name, params)


# ---------------------------------------------------------------- performer

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [5, 32, 64, 200])
def test_performer_equals_the_quadratic_kernel_form(causal, chunk):
    q, k, v = qkv(n=100)
    c = f64_core("performer", n=100, causal=causal, features=32, chunk=chunk)
    c.eps = 0.0  # the stabilisers cancel exactly; eps is the only thing they scale
    ref = quadratic(c.feature_map(q), c.feature_map(k), v, causal=causal)
    torch.testing.assert_close(c(q, k, v), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_gradients_match_the_quadratic_form(causal):
    q, k, v = (t.requires_grad_() for t in qkv(n=40))
    c = f64_core("performer", n=40, causal=causal, features=16, chunk=16)
    c.eps = 0.0
    up = torch.randn(2, 3, 40, 16, dtype=F64)
    got = torch.autograd.grad(c(q, k, v), (q, k, v), up)
    want = torch.autograd.grad(quadratic(c.feature_map(q), c.feature_map(k), v, causal), (q, k, v), up)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_head_groups_change_nothing(causal, monkeypatch):
    q, k, v = (t.requires_grad_() for t in qkv(n=40))
    c = f64_core("performer", n=40, causal=causal, features=16, chunk=16)
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
    c = f64_core("performer", n=64, causal=True, features=24, chunk=16)
    c.eps = 0.0
    rec = recurrent_kernel_attention(c.feature_map(q), c.feature_map(k), v, eps=0.0)
    torch.testing.assert_close(c(q, k, v), rec, rtol=1e-9, atol=1e-11)


def test_performer_causal_result_does_not_depend_on_chunk_with_eps():
    q, k, v = qkv(n=90)
    outs = [f64_core("performer", n=90, causal=True, features=32, chunk=c)(q, k, v) for c in (1, 8, 64, 90)]
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
])
def test_kernel_half_precision_is_close_to_float32(name, causal, params):
    check_kernel_half_precision_is_close_to_float32(name, causal, params)


@pytest.mark.parametrize("name, params", [
    ("performer", {"features": 32, "chunk": 8}), ("performer", {"features": 32, "chunk": 1}),
])
def test_performer_causality(name, params):
    check_causality(name, params)


@pytest.mark.parametrize("name, causal, params", [
    ("performer", False, {"features": 32, "chunk": 32}), ("performer", True, {"features": 32, "chunk": 32}),
])
def test_no_square_tensor_in_forward_and_backward(name, causal, params):
    check_no_square(name, causal, params, 1024)


@pytest.mark.parametrize("name, causal, params", [("performer", True, {"features": 32, "chunk": 32})])
def test_no_square_tensor_with_uneven_chunks_and_segments(name, causal, params):
    check_no_square(name, causal, params, 1000)


@pytest.mark.parametrize("name, causal, params", [("performer", False, {}), ("performer", True, {})])
def test_flops_grow_linearly(name, causal, params):
    check_flops_grow_linearly(name, causal, params)


@pytest.mark.parametrize("name, causal, params", [
    ("performer", False, {"features": 32}), ("performer", True, {"features": 32, "chunk": 16}),
])
def test_gradients_are_finite_and_reach_every_parameter(name, causal, params):
    check_gradients_are_finite_and_reach_every_parameter(name, causal, params)

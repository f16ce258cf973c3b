"""Random feature attention (random_features.py, "rfa"): the invariants of
VARIANTS.md in float64 against the quadratic normalised-kernel form and the
token-by-token gated recurrence, causality, no N×N. (Performer, in the same
module, is tested in test_lowrank_kernel.py.)"""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square
from attnbench.variants.kernel import DEFAULT_EPS

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def layer(n: int = 48, causal: bool = False, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return attnbench.build("rfa", dim=24, heads=3, seq_len=n, causal=causal, **params).to(F64)


def qkv(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, n, 8, generator=g, dtype=F64) for _ in range(3))


def quadratic(phi_q, phi_k, v, causal, eps=DEFAULT_EPS):
    a = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        a = a.tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


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
    q, k, v = qkv()
    expected = quadratic(c.feature_map(q), c.feature_map(k), v, causal)
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
    q, k, v = qkv()
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
        c(*qkv(20))


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

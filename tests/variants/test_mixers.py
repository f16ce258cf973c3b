"""The attention-free mixers (mixers.py: fnet, gmlp, mixer): the invariants of
VARIANTS.md in float64 against explicit reference forms, causality, no N×N."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attnbench
from attnbench.testing import assert_no_square

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, n: int = 24, dim: int = 16, causal: bool = False, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return attnbench.build(name, dim=dim, heads=2, seq_len=n, causal=causal, **params).to(F64)


def test_registered_as_the_mixer_family():
    expected = {"fnet": ("2105.03824", False, {}), "gmlp": ("2105.08050", True, {}),
                "mixer": ("2105.01601", False, {"token_hidden": 256})}
    for name, (paper, causal, defaults) in expected.items():
        info = attnbench.variant_info(name)
        assert (info.family, info.paper, info.causal, info.defaults) == ("mixer", paper, causal, defaults)


@pytest.mark.parametrize("name", ["fnet", "mixer"])
def test_refuse_causal(name):
    with pytest.raises(ValueError, match="causal"):
        attnbench.build(name, dim=16, heads=2, seq_len=24, causal=True)


@pytest.mark.parametrize("name", ["gmlp", "mixer"])
def test_weights_per_position_refuse_another_length(name):
    with pytest.raises(ValueError, match="built for seq_len 24"):
        build(name)(torch.randn(1, 25, 16, dtype=F64))


def test_mixer_bad_token_hidden():
    with pytest.raises(ValueError, match="mixer token_hidden"):
        attnbench.build("mixer", dim=16, heads=2, seq_len=24, token_hidden=0)


# ---------------------------------------------------------------- fnet

def dft(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=F64)
    return torch.exp(-2j * math.pi * torch.outer(k, k) / n)


@pytest.mark.parametrize("n, dim", [(24, 16), (7, 10)])
def test_fnet_equals_the_real_part_of_explicit_dft_matrices(n, dim):
    x = torch.randn(3, n, dim, dtype=F64)
    expected = (dft(n) @ x.to(torch.complex128) @ dft(dim)).real  # F_N x F_dim
    layer = build("fnet", n=n, dim=dim)
    assert not list(layer.parameters())
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- gmlp

def gmlp_reference(layer, x):
    u = F.gelu(x @ layer.proj_in.weight.T + layer.proj_in.bias)
    z1, z2 = u[..., :16], u[..., 16:]
    z2 = F.layer_norm(z2, (16,), layer.norm.weight, layer.norm.bias)
    w = layer.spatial_weight.tril() if layer.causal else layer.spatial_weight
    gate = torch.einsum("ts,bsc->btc", w, z2) + layer.spatial_bias
    return (z1 * gate) @ layer.proj_out.weight.T + layer.proj_out.bias


@pytest.mark.parametrize("causal", [False, True])
def test_gmlp_equals_the_explicit_formula(causal):
    layer = build("gmlp", causal=causal)
    with torch.no_grad():
        layer.spatial_weight.normal_()
        layer.spatial_bias.normal_()
    x = torch.randn(2, 24, 16, dtype=F64)
    torch.testing.assert_close(layer(x), gmlp_reference(layer, x), rtol=1e-10, atol=1e-10)


def test_gmlp_starts_near_zero_with_unit_bias():
    layer = attnbench.build("gmlp", dim=16, heads=2, seq_len=64)
    assert layer.spatial_weight.abs().max() <= 1e-3 / 64 and torch.all(layer.spatial_bias == 1)


def test_gmlp_with_zero_spatial_weight_is_position_wise():
    layer = build("gmlp")
    with torch.no_grad():
        layer.spatial_weight.zero_()
    x = torch.randn(1, 24, 16, dtype=F64)
    y = layer(x)
    for t in (0, 11, 23):
        x2 = x.clone()
        x2[:, t] += torch.randn(16, dtype=F64)
        changed = (layer(x2) - y).abs().amax(-1)[0] > 0
        assert changed.nonzero().flatten().tolist() == [t]


def test_causal_gmlp_never_sees_a_later_position():
    layer = build("gmlp", causal=True)
    with torch.no_grad():
        layer.spatial_weight.normal_()
    x = torch.randn(1, 24, 16, dtype=F64)
    y = layer(x)
    for t in (0, 5, 22):
        x2 = x.clone()
        x2[:, t + 1:] = 10 * torch.randn_like(x2[:, t + 1:])
        torch.testing.assert_close(layer(x2)[:, :t + 1], y[:, :t + 1], rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- mixer

def test_mixer_equals_the_explicit_per_channel_loop():
    layer = build("mixer", token_hidden=12)
    x = torch.randn(2, 24, 16, dtype=F64)
    h = F.layer_norm(x, (16,), layer.norm.weight, layer.norm.bias)
    w1, b1, w2, b2 = layer.token_in.weight, layer.token_in.bias, layer.token_out.weight, layer.token_out.bias
    expected = torch.empty_like(x)
    for b in range(2):
        for c in range(16):  # W₂ GELU(W₁ x[:, c] + b₁) + b₂ for each channel
            expected[b, :, c] = w2 @ F.gelu(w1 @ h[b, :, c] + b1) + b2
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- all three

@pytest.mark.parametrize("name, params", [("fnet", {}), ("mixer", {"token_hidden": 64})])
def test_no_square(name, params):
    n = 1024
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, **params)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)


@pytest.mark.parametrize("name, low, high", [("fnet", 2.0, 2.2), ("mixer", 1.95, 2.05), ("gmlp", 3.3, 4.0)])
def test_flops_grow_as_claimed(name, low, high):
    layer = attnbench.build(name, dim=512, heads=8, seq_len=64)  # flops() does not read the weights
    assert low <= layer.flops(1, 8192) / layer.flops(1, 4096) <= high

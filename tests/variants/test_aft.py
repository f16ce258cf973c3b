"""AFT, simple, full and local (attnbench.variants.aft): the invariants of
VARIANTS.md ("No query-key products"), in float64 at small N, against the
naive (N, N) sum."""

from __future__ import annotations

import pytest
import torch

from attnbench.variants.aft import banded_apply, full_to_band
from tests.helpers import (
    F64,
    SMALL_DIM,
    case_ids,
    check_causal_output_ignores_the_future,
    check_flops_grow_as_claimed,
    check_gradients_reach_every_parameter,
    check_no_square_tensor_forward_and_backward,
    f64_layer,
    f64_randn,
)

# every mode; LINEAR: the modes that are linear in N
CASES = [("aft", {"mode": "simple"}), ("aft", {"mode": "full"}), ("aft", {"mode": "local", "window": 8})]
CASE_IDS = case_ids(CASES)
LINEAR = [("aft", {"mode": "simple"}), ("aft", {"mode": "local", "window": 16})]

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("name", "params", "choices"), [
    ("aft", {"mode": "conv"}, "simple, full, local"),
    ("aft", {"mode": "local", "window": 0}, "positive"),
    ("aft", {"windw": 8}, "window"),
])
def test_bad_parameters(name: str, params: dict, choices: str) -> None:
    with pytest.raises(ValueError, match=choices):
        f64_layer(name, 32, **params)


@pytest.mark.parametrize(("name", "params"), [c for c in CASES if c[1]["mode"] != "simple"])
def test_fixed_length_modes_refuse_another_length(name: str, params: dict) -> None:
    layer = f64_layer(name, 32, **params)
    with pytest.raises(ValueError, match="seq_len 32"):
        layer(f64_randn(1, 24, SMALL_DIM))


@pytest.mark.parametrize(("name", "params"), LINEAR[:1])
def test_length_free_variants_take_any_length(name: str, params: dict) -> None:
    layer = f64_layer(name, 32, **params)
    assert layer(f64_randn(2, 45, SMALL_DIM)).shape == (2, 45, SMALL_DIM)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_gradients_finite_and_reach_every_parameter(name: str, params: dict, causal: bool) -> None:
    check_gradients_reach_every_parameter(name, params, causal)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_causal_output_ignores_the_future(name: str, params: dict) -> None:
    check_causal_output_ignores_the_future(name, params)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "params"), LINEAR)
def test_no_square_tensor_forward_and_backward(name: str, params: dict, causal: bool) -> None:
    check_no_square_tensor_forward_and_backward(name, params, causal)


@pytest.mark.parametrize(("name", "params", "growth"), [(*c, 2.0) for c in LINEAR] + [("aft", {"mode": "full"}, 4.0)])
def test_flops_grow_as_claimed(name: str, params: dict, growth: float) -> None:
    check_flops_grow_as_claimed(name, params, growth)


# ---------------------------------------------------------------- aft

def naive_aft(layer: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Y_t = σ(Q_t) ⊙ Σ_t' exp(K_t' + w_tt') V_t' / Σ_t' exp(K_t' + w_tt'), as an (N, N) sum."""
    q, k, v = layer.to_qkv(x).chunk(3, dim=-1)
    n = x.shape[1]
    if layer.causal:
        w = w.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    a = torch.exp(k[:, None, :, :] + w[None, :, :, None])  # (B, t, t', C)
    return layer.out(torch.sigmoid(q) * (a * v[:, None]).sum(2) / a.sum(2))


def band_mask(n: int, s: int) -> torch.Tensor:
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() < s


def aft_pair(n: int, causal: bool, mode: str, **params) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An aft layer of ``mode`` and an aft simple layer with the same projections."""
    layer = f64_layer("aft", n, causal=causal, mode=mode, **params)
    simple = f64_layer("aft", n, causal=causal, mode="simple")
    simple.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "w"})
    return layer, simple


@pytest.mark.parametrize("causal", [False, True])
def test_aft_simple_equals_naive_with_zero_bias(causal: bool) -> None:
    n = 48
    layer = f64_layer("aft", n, causal=causal)
    x = f64_randn(2, n, SMALL_DIM)
    torch.testing.assert_close(layer(x), naive_aft(layer, x, torch.zeros(n, n, dtype=F64)))


@pytest.mark.parametrize("causal", [False, True])
def test_aft_simple_gradients_equal_naive(causal: bool) -> None:
    """The non-causal path has a hand-written backward: check values (with and
    without autograd) and every gradient against the naive form."""
    n = 24
    layer = f64_layer("aft", n, causal=causal)
    x = f64_randn(2, n, SMALL_DIM).requires_grad_()
    upstream = f64_randn(2, n, SMALL_DIM, seed=2)
    inputs = [x, *layer.parameters()]
    y = layer(x)
    got = torch.autograd.grad((y * upstream).sum(), inputs)
    naive = naive_aft(layer, x, torch.zeros(n, n, dtype=F64))
    expected = torch.autograd.grad((naive * upstream).sum(), inputs)
    torch.testing.assert_close(y, naive)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    with torch.no_grad():
        k_shift = torch.zeros(n, 1, dtype=F64)
        k_shift[n // 2:] = 50.0  # a large range of K: the max subtraction keeps exp finite
        x2 = x + k_shift * layer.to_qkv.weight[SMALL_DIM:2 * SMALL_DIM].pinverse().sum(-1)
        torch.testing.assert_close(layer(x), naive)
        torch.testing.assert_close(layer(x2), naive_aft(layer, x2, torch.zeros(n, n, dtype=F64)))


@pytest.mark.parametrize("causal", [False, True])
def test_aft_full_with_zero_w_equals_simple(causal: bool) -> None:
    n = 48
    full, simple = aft_pair(n, causal, "full")
    with torch.no_grad():
        full.w.zero_()
    x = f64_randn(2, n, SMALL_DIM)
    torch.testing.assert_close(full(x), simple(x))


@pytest.mark.parametrize("causal", [False, True])
def test_aft_full_equals_naive(causal: bool) -> None:
    n = 48
    layer = f64_layer("aft", n, causal=causal, mode="full")
    w = 2 * f64_randn(n, n, seed=3)
    with torch.no_grad():
        layer.w.copy_(w)
    x = f64_randn(2, n, SMALL_DIM)
    torch.testing.assert_close(layer(x), naive_aft(layer, x, w))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "s"), [(64, 8), (50, 7), (37, 1), (33, 32)])
def test_aft_local_decomposition_equals_naive(n: int, s: int, causal: bool) -> None:
    layer = f64_layer("aft", n, causal=causal, mode="local", window=s)
    w_full = 2 * f64_randn(n, n, seed=3)
    with torch.no_grad():
        layer.w.copy_(full_to_band(w_full, s, causal))
    w_local = torch.where(band_mask(n, s), w_full, torch.zeros((), dtype=F64))  # zero outside
    x = f64_randn(2, n, SMALL_DIM)
    torch.testing.assert_close(layer(x), naive_aft(layer, x, w_local))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s", [40, 64])
def test_aft_local_with_window_over_n_equals_full(s: int, causal: bool) -> None:
    n = 40
    local, _ = aft_pair(n, causal, "local", window=s)
    full = f64_layer("aft", n, causal=causal, mode="full")
    full.load_state_dict({k: v for k, v in local.state_dict().items() if k != "w"}, strict=False)
    with torch.no_grad():
        local.w.copy_(full_to_band(full.w, s, causal))
    x = f64_randn(2, n, SMALL_DIM)
    torch.testing.assert_close(local(x), full(x))


@pytest.mark.parametrize("causal", [False, True])
def test_banded_apply_equals_dense_band_product(causal: bool) -> None:
    n, s = 45, 6
    w = f64_randn(n, n, seed=4)
    allowed = band_mask(n, s) & (torch.ones(n, n, dtype=torch.bool).tril() if causal else True)
    z = f64_randn(3, n, 5)
    expected = torch.where(allowed, w, torch.zeros((), dtype=F64)) @ z
    torch.testing.assert_close(banded_apply(full_to_band(w, s, causal), z, s, causal), expected)


@pytest.mark.parametrize("mode", ["full", "local"])
def test_aft_large_bias_does_not_overflow(mode: str) -> None:
    n = 32
    layer = f64_layer("aft", n, dtype=torch.float32, mode=mode, window=4)
    with torch.no_grad():
        layer.w.fill_(300.0)  # exp(300) overflows float32
    y = layer(torch.randn(1, n, SMALL_DIM))
    assert torch.isfinite(y).all()

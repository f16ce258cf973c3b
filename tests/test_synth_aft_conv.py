"""Synthesizer, AFT (simple / full / local), lightconv and dynamicconv: the
invariants of VARIANTS.md ("No query-key products"), in float64 at small N."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square
from attnbench.variants.aft import banded_apply, full_to_band
from attnbench.variants.conv import (
    conv_padding,
    dynamic_conv,
    lightconv_conv1d,
    lightconv_unfold,
)

DIM, HEADS = 16, 4
F64 = torch.float64

# every (variant, params) of this family; all of them support causal.
CASES = [
    ("synthesizer", {"mode": "dense"}),
    ("synthesizer", {"mode": "random"}),
    ("synthesizer", {"mode": "factorized", "k": 8}),
    ("aft", {"mode": "simple"}),
    ("aft", {"mode": "full"}),
    ("aft", {"mode": "local", "window": 8}),
    ("lightconv", {"kernel_size": 7}),
    ("dynamicconv", {"kernel_size": 7}),
]
CASE_IDS = [f"{name}-{'-'.join(str(v) for v in params.values())}" for name, params in CASES]
LINEAR = [
    ("aft", {"mode": "simple"}),
    ("aft", {"mode": "local", "window": 16}),
    ("lightconv", {"kernel_size": 7}),
    ("dynamicconv", {"kernel_size": 7}),
]
QUADRATIC = [
    ("synthesizer", {"mode": "dense"}),
    ("synthesizer", {"mode": "random"}),
    ("synthesizer", {"mode": "factorized"}),
    ("aft", {"mode": "full"}),
]


# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, n: int, causal: bool = False, dim: int = DIM, heads: int = HEADS,
          dtype: torch.dtype = F64, seed: int = 0, **params) -> torch.nn.Module:
    torch.manual_seed(seed)
    return attnbench.build(name, dim=dim, heads=heads, seq_len=n, causal=causal, **params).to(dtype)


def randn(*shape: int, dtype: torch.dtype = F64, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- registry

def test_registry_entries() -> None:
    expected = {
        "synthesizer": ("synthesizer", "2005.00743", {"mode": "dense", "k": 32}),
        "aft": ("aft", "2105.14103", {"mode": "simple", "window": 64}),
        "lightconv": ("conv", "1901.10430", {"kernel_size": 31}),
        "dynamicconv": ("conv", "1901.10430", {"kernel_size": 31}),
    }
    for name, (family, paper, defaults) in expected.items():
        info = attnbench.variant_info(name)
        assert (info.family, info.paper, info.defaults, info.causal) == (family, paper, defaults, True)
        assert info.complexity


@pytest.mark.parametrize(("name", "params", "choices"), [
    ("synthesizer", {"mode": "sparse"}, "dense, random, factorized"),
    ("synthesizer", {"k": 0}, "positive"),
    ("aft", {"mode": "conv"}, "simple, full, local"),
    ("aft", {"mode": "local", "window": 0}, "positive"),
    ("lightconv", {"kernel_size": 0}, "positive"),
    ("dynamicconv", {"kernel_size": 2.5}, "positive"),
    ("aft", {"windw": 8}, "window"),
])
def test_bad_parameters(name: str, params: dict, choices: str) -> None:
    with pytest.raises(ValueError, match=choices):
        build(name, 32, **params)


@pytest.mark.parametrize(("name", "params"), [c for c in CASES if c[0] in ("synthesizer", "aft")
                                              and c[1]["mode"] != "simple"])
def test_fixed_length_modes_refuse_another_length(name: str, params: dict) -> None:
    layer = build(name, 32, **params)
    with pytest.raises(ValueError, match="seq_len 32"):
        layer(randn(1, 24, DIM))


@pytest.mark.parametrize(("name", "params"), LINEAR[:1] + LINEAR[2:])
def test_length_free_variants_take_any_length(name: str, params: dict) -> None:
    layer = build(name, 32, **params)
    assert layer(randn(2, 45, DIM)).shape == (2, 45, DIM)


# ---------------------------------------------------------------- all cases

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_gradients_finite_and_reach_every_parameter(name: str, params: dict, causal: bool) -> None:
    n = 40
    layer = build(name, n, causal=causal, **params)
    x = randn(2, n, DIM).requires_grad_()
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * randn(*y.shape, seed=2)).sum().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    if name == "aft" and params["mode"] == "local":
        # every band entry that points at a real token is used
        inside = full_to_band(torch.ones(n, n, dtype=F64), layer.s, causal) > 0
        assert (layer.w.grad[inside] != 0).all()


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_causal_output_ignores_the_future(name: str, params: dict) -> None:
    n, t = 40, 17
    layer = build(name, n, causal=True, **params)
    x = randn(2, n, DIM)
    x2 = x.clone()
    x2[:, t + 1:] += 3 * randn(2, n - t - 1, DIM, seed=5)
    with torch.no_grad():
        y, y2 = layer(x), layer(x2)
    torch.testing.assert_close(y[:, :t + 1], y2[:, :t + 1], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])
    # the same layer without the mask does look ahead
    layer.causal = False
    if name == "aft" and params["mode"] == "local":
        return  # its band parameter has the causal layout
    with torch.no_grad():
        assert not torch.allclose(layer(x)[:, :t + 1], layer(x2)[:, :t + 1])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "params"), LINEAR)
def test_no_square_tensor_forward_and_backward(name: str, params: dict, causal: bool) -> None:
    n, dim = 1024, 32  # N > 3·dim: no projection weight has two dims >= N
    layer = build(name, n, causal=causal, dim=dim, heads=2, dtype=torch.float32, **params)
    x = torch.randn(1, n, dim, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)
    assert x.grad is not None


@pytest.mark.parametrize(("name", "params", "growth"),
                         [(*c, 2.0) for c in LINEAR] + [(*c, 4.0) for c in QUADRATIC])
def test_flops_grow_as_claimed(name: str, params: dict, growth: float) -> None:
    n = 2048
    with torch.device("meta"):  # FLOPs need no parameter values
        layer = attnbench.build(name, dim=32, heads=2, seq_len=n, **params)
    ratio = layer.flops(1, 2 * n) / layer.flops(1, n)
    assert ratio == pytest.approx(growth, rel=0.06)
    assert layer.flops(2, n) > layer.flops(1, n) > 0


def test_half_precision_inputs() -> None:
    for name, params in CASES[:6]:
        layer = build(name, 32, dtype=torch.bfloat16, **params)
        y = layer(torch.randn(1, 32, DIM, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y).all(), (name, params)


# ---------------------------------------------------------------- synthesizer

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["dense", "random", "factorized"])
def test_synthesizer_equals_softmax_of_its_logits(mode: str, causal: bool) -> None:
    n = 24
    layer = build("synthesizer", n, causal=causal, mode=mode, k=4)
    x = randn(2, n, DIM)
    logits = layer.logits(x).expand(2, HEADS, n, n)
    if causal:
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if causal:
        assert (probs.triu(1) == 0).all()
    v = layer.to_v(x).view(2, n, HEADS, DIM // HEADS).transpose(1, 2)
    expected = layer.out((probs @ v).transpose(1, 2).reshape(2, n, DIM))
    torch.testing.assert_close(layer(x), expected)
    if mode == "factorized":
        assert torch.linalg.matrix_rank(layer.logits(x)[0]) <= 4
    if mode == "dense":  # logits_i depend on x_i only
        x2 = x.clone()
        x2[:, 5] += 1
        changed = (layer.logits(x2) != layer.logits(x)).any(-1)
        assert changed[:, :, 5].all() and changed.sum() == 2 * HEADS


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
    layer = build("aft", n, causal=causal, mode=mode, **params)
    simple = build("aft", n, causal=causal, mode="simple")
    simple.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "w"})
    return layer, simple


@pytest.mark.parametrize("causal", [False, True])
def test_aft_simple_equals_naive_with_zero_bias(causal: bool) -> None:
    n = 48
    layer = build("aft", n, causal=causal)
    x = randn(2, n, DIM)
    torch.testing.assert_close(layer(x), naive_aft(layer, x, torch.zeros(n, n, dtype=F64)))


@pytest.mark.parametrize("causal", [False, True])
def test_aft_simple_gradients_equal_naive(causal: bool) -> None:
    """The non-causal path has a hand-written backward: check values (with and
    without autograd) and every gradient against the naive form."""
    n = 24
    layer = build("aft", n, causal=causal)
    x = randn(2, n, DIM).requires_grad_()
    upstream = randn(2, n, DIM, seed=2)
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
        x2 = x + k_shift * layer.to_qkv.weight[DIM:2 * DIM].pinverse().sum(-1)
        torch.testing.assert_close(layer(x), naive)
        torch.testing.assert_close(layer(x2), naive_aft(layer, x2, torch.zeros(n, n, dtype=F64)))


@pytest.mark.parametrize("causal", [False, True])
def test_aft_full_with_zero_w_equals_simple(causal: bool) -> None:
    n = 48
    full, simple = aft_pair(n, causal, "full")
    with torch.no_grad():
        full.w.zero_()
    x = randn(2, n, DIM)
    torch.testing.assert_close(full(x), simple(x))


@pytest.mark.parametrize("causal", [False, True])
def test_aft_full_equals_naive(causal: bool) -> None:
    n = 48
    layer = build("aft", n, causal=causal, mode="full")
    w = 2 * randn(n, n, seed=3)
    with torch.no_grad():
        layer.w.copy_(w)
    x = randn(2, n, DIM)
    torch.testing.assert_close(layer(x), naive_aft(layer, x, w))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "s"), [(64, 8), (50, 7), (37, 1), (33, 32)])
def test_aft_local_decomposition_equals_naive(n: int, s: int, causal: bool) -> None:
    layer = build("aft", n, causal=causal, mode="local", window=s)
    w_full = 2 * randn(n, n, seed=3)
    with torch.no_grad():
        layer.w.copy_(full_to_band(w_full, s, causal))
    w_local = torch.where(band_mask(n, s), w_full, torch.zeros((), dtype=F64))  # zero outside
    x = randn(2, n, DIM)
    torch.testing.assert_close(layer(x), naive_aft(layer, x, w_local))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s", [40, 64])
def test_aft_local_with_window_over_n_equals_full(s: int, causal: bool) -> None:
    n = 40
    local, _ = aft_pair(n, causal, "local", window=s)
    full = build("aft", n, causal=causal, mode="full")
    full.load_state_dict({k: v for k, v in local.state_dict().items() if k != "w"}, strict=False)
    with torch.no_grad():
        local.w.copy_(full_to_band(full.w, s, causal))
    x = randn(2, n, DIM)
    torch.testing.assert_close(local(x), full(x))


@pytest.mark.parametrize("causal", [False, True])
def test_banded_apply_equals_dense_band_product(causal: bool) -> None:
    n, s = 45, 6
    w = randn(n, n, seed=4)
    allowed = band_mask(n, s) & (torch.ones(n, n, dtype=torch.bool).tril() if causal else True)
    z = randn(3, n, 5)
    expected = torch.where(allowed, w, torch.zeros((), dtype=F64)) @ z
    torch.testing.assert_close(banded_apply(full_to_band(w, s, causal), z, s, causal), expected)


@pytest.mark.parametrize("mode", ["full", "local"])
def test_aft_large_bias_does_not_overflow(mode: str) -> None:
    n = 32
    layer = build("aft", n, dtype=torch.float32, mode=mode, window=4)
    with torch.no_grad():
        layer.w.fill_(300.0)  # exp(300) overflows float32
    y = layer(torch.randn(1, n, DIM))
    assert torch.isfinite(y).all()


# ---------------------------------------------------------------- convolutions

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 4, 7])
def test_lightconv_unfold_equals_conv1d_and_taps(k: int, causal: bool) -> None:
    n = 30
    layer = build("lightconv", n, causal=causal, kernel_size=k)
    h = randn(2, n, DIM)
    y = layer.conv(h, impl="conv1d")
    torch.testing.assert_close(layer.conv(h, impl="unfold"), y)
    # written out: y[t, c] = Σ_j kernel[c // (dim/H), j] · h[t + j − left, c]
    kernel, left = layer.kernel(), conv_padding(k, causal)[0]
    rows = torch.arange(DIM) // (DIM // HEADS)
    expected = torch.zeros_like(h)
    for j in range(k):
        src = torch.arange(n) + j - left
        ok = (src >= 0) & (src < n)
        expected[:, ok] += kernel[rows, j] * h[:, src[ok]]
    torch.testing.assert_close(y, expected)
    # gradients: the unfold path has a hand-written backward
    h.requires_grad_()
    weight = layer.weight
    upstream = expected.detach()
    grads = [torch.autograd.grad((f(h, torch.softmax(weight, -1), causal) * upstream).sum(), (h, weight))
             for f in (lightconv_unfold, lightconv_conv1d)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [5, 6])
def test_conv_output_depends_only_on_its_window(name: str, k: int, causal: bool) -> None:
    n = 24
    layer = build(name, n, causal=causal, kernel_size=k)
    left, right = conv_padding(k, causal)
    # causal looks back only; otherwise centred, the extra tap of an even K on the left
    assert (left, right) == ((k - 1, 0) if causal else (k // 2, (k - 1) // 2))
    x = randn(1, n, DIM).requires_grad_()
    y = layer(x)
    for t in (0, 3, 11, n - 1):
        (grad,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
        seen = set(torch.nonzero(grad[0].abs().sum(-1)).flatten().tolist())
        assert seen == set(range(max(0, t - left), min(n, t + right + 1))), t


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
def test_conv_constant_input_gives_constant_interior_output(name: str) -> None:
    n, k = 32, 7
    layer = build(name, n, kernel_size=k)
    x = randn(1, 1, DIM).expand(2, n, DIM)
    y = layer(x)
    interior = y[:, k // 2: n - k // 2]
    torch.testing.assert_close(interior, interior[:, :1].expand_as(interior))
    # the kernel sums to one: the interior equals the output of a single token
    torch.testing.assert_close(interior[:, 0], layer.out(torch.nn.functional.glu(layer.in_proj(x[:, 0]))))


@pytest.mark.parametrize("causal", [False, True])
def test_dynamicconv_with_zero_weights_equals_lightconv(causal: bool) -> None:
    n, k = 30, 5
    dyn = build("dynamicconv", n, causal=causal, kernel_size=k)
    light = build("lightconv", n, causal=causal, kernel_size=k, seed=9)
    b = randn(HEADS, k, seed=6)
    with torch.no_grad():
        dyn.weight_linear.weight.zero_()
        dyn.weight_linear.bias.copy_(b.flatten())
        light.weight.copy_(b)
        light.in_proj.load_state_dict(dyn.in_proj.state_dict())
        light.out.load_state_dict(dyn.out.state_dict())
    x = randn(2, n, DIM)
    torch.testing.assert_close(dyn(x), light(x))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_dynamic_conv_gradcheck(k: int, causal: bool) -> None:
    h = randn(2, 9, 6).requires_grad_()
    kernel = randn(2, 9, 3, k, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: dynamic_conv(a, b, causal), (h, kernel))


def test_dynamic_conv_uses_each_positions_kernel() -> None:
    n, k, heads = 20, 5, 2
    h = randn(2, n, 6)
    kernel = torch.softmax(randn(2, n, heads, k, seed=7), dim=-1)
    y = dynamic_conv(h, kernel, causal=True)
    t, c = 9, 4  # channel 4 belongs to head 1
    expected = sum(kernel[:, t, 1, j] * h[:, t + j - (k - 1), c] for j in range(k))
    torch.testing.assert_close(y[:, t, c], expected)

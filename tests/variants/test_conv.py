"""lightconv and dynamicconv (attnbench.variants.conv): the invariants of VARIANTS.md
("No query-key products"), in float64 at small N: each output depends on its
window only, the two convolution paths agree, each position uses its kernel."""

from __future__ import annotations

import pytest
import torch

from attnbench.variants.conv import (
    conv_padding,
    dynamic_conv,
    lightconv_conv1d,
    lightconv_unfold,
)
from tests.helpers import (
    SMALL_DIM,
    SMALL_HEADS,
    case_ids,
    check_causal_output_ignores_the_future,
    check_flops_grow_as_claimed,
    check_gradients_reach_every_parameter,
    check_no_square_tensor_forward_and_backward,
    f64_layer,
    f64_randn,
)

# both variants; both are linear in N and take any length
CASES = [("lightconv", {"kernel_size": 7}), ("dynamicconv", {"kernel_size": 7})]
CASE_IDS = case_ids(CASES)

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("name", "params", "choices"), [
    ("lightconv", {"kernel_size": 0}, "positive"),
    ("dynamicconv", {"kernel_size": 2.5}, "positive"),
])
def test_bad_parameters(name: str, params: dict, choices: str) -> None:
    with pytest.raises(ValueError, match=choices):
        f64_layer(name, 32, **params)


@pytest.mark.parametrize(("name", "params"), CASES)
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
@pytest.mark.parametrize(("name", "params"), CASES)
def test_no_square_tensor_forward_and_backward(name: str, params: dict, causal: bool) -> None:
    check_no_square_tensor_forward_and_backward(name, params, causal)


@pytest.mark.parametrize(("name", "params", "growth"), [(*c, 2.0) for c in CASES])
def test_flops_grow_as_claimed(name: str, params: dict, growth: float) -> None:
    check_flops_grow_as_claimed(name, params, growth)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 4, 7])
def test_lightconv_unfold_equals_conv1d_and_taps(k: int, causal: bool) -> None:
    n = 30
    layer = f64_layer("lightconv", n, causal=causal, kernel_size=k)
    h = f64_randn(2, n, SMALL_DIM)
    y = layer.conv(h, impl="conv1d")
    torch.testing.assert_close(layer.conv(h, impl="unfold"), y)
    # written out: y[t, c] = Σ_j kernel[c // (dim/H), j] · h[t + j − left, c]
    kernel, left = layer.kernel(), conv_padding(k, causal)[0]
    rows = torch.arange(SMALL_DIM) // (SMALL_DIM // SMALL_HEADS)
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
    layer = f64_layer(name, n, causal=causal, kernel_size=k)
    left, right = conv_padding(k, causal)
    # causal looks back only; otherwise centred, the extra tap of an even K on the left
    assert (left, right) == ((k - 1, 0) if causal else (k // 2, (k - 1) // 2))
    x = f64_randn(1, n, SMALL_DIM).requires_grad_()
    y = layer(x)
    for t in (0, 3, 11, n - 1):
        (grad,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
        seen = set(torch.nonzero(grad[0].abs().sum(-1)).flatten().tolist())
        assert seen == set(range(max(0, t - left), min(n, t + right + 1))), t


@pytest.mark.parametrize("name", ["lightconv", "dynamicconv"])
def test_conv_constant_input_gives_constant_interior_output(name: str) -> None:
    n, k = 32, 7
    layer = f64_layer(name, n, kernel_size=k)
    x = f64_randn(1, 1, SMALL_DIM).expand(2, n, SMALL_DIM)
    y = layer(x)
    interior = y[:, k // 2: n - k // 2]
    torch.testing.assert_close(interior, interior[:, :1].expand_as(interior))
    # the kernel sums to one: the interior equals the output of a single token
    torch.testing.assert_close(interior[:, 0], layer.out(torch.nn.functional.glu(layer.in_proj(x[:, 0]))))


@pytest.mark.parametrize("causal", [False, True])
def test_dynamicconv_with_zero_weights_equals_lightconv(causal: bool) -> None:
    n, k = 30, 5
    dyn = f64_layer("dynamicconv", n, causal=causal, kernel_size=k)
    light = f64_layer("lightconv", n, causal=causal, kernel_size=k, seed=9)
    b = f64_randn(SMALL_HEADS, k, seed=6)
    with torch.no_grad():
        dyn.weight_linear.weight.zero_()
        dyn.weight_linear.bias.copy_(b.flatten())
        light.weight.copy_(b)
        light.in_proj.load_state_dict(dyn.in_proj.state_dict())
        light.out.load_state_dict(dyn.out.state_dict())
    x = f64_randn(2, n, SMALL_DIM)
    torch.testing.assert_close(dyn(x), light(x))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_dynamic_conv_gradcheck(k: int, causal: bool) -> None:
    h = f64_randn(2, 9, 6).requires_grad_()
    kernel = f64_randn(2, 9, 3, k, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: dynamic_conv(a, b, causal), (h, kernel))


def test_dynamic_conv_uses_each_positions_kernel() -> None:
    n, k, heads = 20, 5, 2
    h = f64_randn(2, n, 6)
    kernel = torch.softmax(f64_randn(2, n, heads, k, seed=7), dim=-1)
    y = dynamic_conv(h, kernel, causal=True)
    t, c = 9, 4  # channel 4 belongs to head 1
    expected = sum(kernel[:, t, 1, j] * h[:, t + j - (k - 1), c] for j in range(k))
    torch.testing.assert_close(y[:, t, c], expected)

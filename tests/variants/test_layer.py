"""What every layer keeps (attnbench.variants.layer), checked on every built-in
variant the moment it is registered: shapes, gradients to every parameter,
the runner's inference-then-training order, seeds, FLOPs, head groups on the CPU,
the fused projection's gradients, half precision and autocast."""

import copy

import pytest
import torch

import attnbench
from attnbench.testing import training_step
from tests.helpers import BUILTIN, SMALL_DIM, f64_layer

N, DIM, HEADS = 128, 32, 2

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", BUILTIN)
def test_shape_and_gradients_reach_every_parameter(name, causal):
    if causal and not attnbench.variant_info(name).causal:
        with pytest.raises(ValueError, match="causal"):
            attnbench.build(name, dim=DIM, heads=HEADS, seq_len=N, causal=True)
        return
    layer = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=N, causal=causal)
    if not layer.cpu_backward:
        pytest.skip(f"{name} has no backward on CPU (a PyTorch limitation)")
    x = torch.randn(2, N, DIM, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    y.backward(torch.randn_like(y))
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", BUILTIN)
def test_inference_forward_then_training_step_on_the_same_layer(name):
    # The runner's order: a forward pass under inference_mode, then backward
    # passes on the same layer. Anything cached during the first (masks,
    # patterns) must still work with autograd.
    n = 1024  # past bigbird's full-attention threshold, so its block pattern is used
    layer = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=n).eval()  # eval: no routing EMA step
    if not layer.cpu_backward:
        pytest.skip(f"{name} has no backward on CPU (a PyTorch limitation)")
    x = torch.randn(1, n, DIM)
    with torch.inference_mode():
        expected = layer(x)
    x.requires_grad_()
    y = layer(x)
    y.backward(torch.randn_like(y))
    assert x.grad is not None and torch.isfinite(x.grad).all()
    torch.testing.assert_close(y.detach(), expected)


@pytest.mark.parametrize("name", BUILTIN)
def test_same_seed_builds_the_same_layer(name):
    torch.manual_seed(3)
    a = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=N)
    torch.manual_seed(3)
    b = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=N)
    x = torch.randn(1, N, DIM)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("name", BUILTIN)
def test_flops_are_positive_and_grow(name):
    small = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=N)
    large = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=2 * N)
    f1, f2 = small.flops(1, N), large.flops(1, 2 * N)
    assert isinstance(f1, int) and f1 > 0
    # The family tests check the exact growth at large N; here fixed costs (landmarks) may dominate.
    assert 1.0 < f2 / f1 <= 4.5
    # Linear in the batch, up to per-layer work such as normalising a shared kernel.
    assert large.flops(2, 2 * N) == pytest.approx(2 * f2, rel=1e-3)


def test_bad_dims_are_value_errors():
    with pytest.raises(ValueError, match="must divide"):
        attnbench.build("softmax", dim=30, heads=4, seq_len=16)
    with pytest.raises(ValueError, match="seq_len"):
        attnbench.build("softmax", dim=32, heads=4, seq_len=0)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "causal"), [(name, causal) for name in BUILTIN for causal in (False, True)
                                               if not causal or attnbench.variant_info(name).causal])
def test_head_groups_on_cpu_change_nothing(name, causal, monkeypatch):
    # A workspace budget of 1 byte makes every core that uses in_head_groups run one
    # head of one batch row per call, and one query block at a time where the core
    # cuts heads further; outputs and gradients must not move.
    n = 1024  # past bigbird's full-attention threshold
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=DIM, heads=HEADS, seq_len=n, causal=causal).double().eval()
    if not layer.cpu_backward:
        pytest.skip(f"{name} has no backward on CPU (a PyTorch limitation)")
    x = torch.randn(2, n, DIM, dtype=torch.float64, requires_grad=True)

    whole = training_step(layer, x)
    monkeypatch.setattr(attnbench.variants.layer, "CPU_WORKSPACE_BYTES", 1)
    grouped = training_step(layer, x)
    torch.testing.assert_close(grouped[0], whole[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grouped[1], whole[1], rtol=1e-10, atol=1e-12)
    for g, w in zip(grouped[2], whole[2], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_in_head_groups_splits_by_the_workspace_budget(monkeypatch):
    from attnbench.variants import layer as layer_mod

    calls = []

    def fn(q, k, v, heads):
        calls.append((q.shape[0], heads))
        assert q.shape[1] == heads.stop - heads.start
        return q + k + v

    q = torch.randn(2, 8, 16, 4)
    per_head = 16 * 10 * q.element_size()  # N · keys_per_query · bytes
    monkeypatch.setattr(layer_mod, "CPU_WORKSPACE_BYTES", 2 * 8 * per_head)
    assert torch.equal(layer_mod.in_head_groups(fn, q, q, q, 10), 3 * q)
    assert calls == [(2, slice(0, 8))]  # fits: one call

    calls.clear()
    monkeypatch.setattr(layer_mod, "CPU_WORKSPACE_BYTES", 3 * per_head)
    assert torch.equal(layer_mod.in_head_groups(fn, q, q, q, 10), 3 * q)
    # batch rows apart, then groups of 3 heads (the last one shorter)
    assert calls == [(1, slice(0, 3)), (1, slice(3, 6)), (1, slice(6, 8))] * 2

    calls.clear()
    meta = torch.empty(2, 8, 16, 4, device="meta")
    layer_mod.in_head_groups(fn, meta, meta, meta, 10)
    assert calls == [(2, slice(0, 8))]  # not CPU: never split


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("used", ["all", "first"])
def test_split_projection_gradients_equal_the_plain_views(parts, used):
    # split_projection's backward writes the parts' gradients into one buffer;
    # autograd through the plain view/permute/unbind is the reference.
    from attnbench.variants import layer as layer_mod

    g = torch.Generator().manual_seed(0)
    fused = torch.randn(2, 11, parts * 3 * 4, generator=g, dtype=torch.float64, requires_grad=True)
    ups = [torch.randn(2, 3, 11, 4, generator=g, dtype=torch.float64) for _ in range(parts)]

    def grad_of(split):
        views = split(fused, parts, 3)
        assert all(t.shape == (2, 3, 11, 4) for t in views)
        taken = views if used == "all" else views[:1]  # unused parts: a None gradient, zeros
        loss = sum((t * up).sum() for t, up in zip(taken, ups, strict=False))
        return torch.autograd.grad(loss, fused)[0]

    torch.testing.assert_close(grad_of(layer_mod.split_projection), grad_of(layer_mod._split_views),
                               rtol=0, atol=0)


@pytest.mark.slow
def test_projected_layers_support_double_backward_and_torch_func():
    # split_projection's backward is itself differentiable: gradient penalties
    # (create_graph=True) and torch.func.grad work on every projected layer as on plain ops.
    torch.manual_seed(0)
    layer = attnbench.build("softmax", dim=16, heads=2, seq_len=8).double()
    x = torch.randn(2, 8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x), (x,))
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, p, (x,)).square().sum()

    got = torch.func.grad(loss)(params, x.detach())
    want = torch.autograd.grad(layer(x).square().sum(), list(layer.parameters()))
    for name, g in zip(dict(layer.named_parameters()), want, strict=True):
        torch.testing.assert_close(got[name], g)


# Discrete choices (which cluster a token joins) legitimately flip under
# rounding; with one cluster routing's arithmetic path is checked alone.
PARAMS = {"routing": {"clusters": 1}}


def _cases():
    for name in BUILTIN:
        for causal in (False, True):
            if causal and not attnbench.variant_info(name).causal:
                continue
            for dtype in (torch.float16, torch.bfloat16):
                yield pytest.param(name, causal, dtype, id=f"{name}-{'causal' if causal else 'full'}-{dtype}")


@pytest.mark.slow
@pytest.mark.parametrize("name,causal,dtype", list(_cases()))
def test_half_precision_output_is_close_to_float64(name, causal, dtype):
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=64, heads=4, seq_len=128, causal=causal, **PARAMS.get(name, {}))
    layer = layer.double().eval()
    x = torch.randn(2, 128, 64, dtype=torch.float64)
    with torch.no_grad():
        reference = layer(x)
        out = copy.deepcopy(layer).to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    rel = ((out.double() - reference).norm() / reference.norm()).item()
    assert rel < 1e-2, f"{name} in {dtype}: relative error {rel:.2e}"


def _autocast_cases():
    for name in BUILTIN:
        if name.startswith("flex_"):
            continue  # FlexAttention has no backward on CPU
        for causal in (False, True):
            if not causal or attnbench.variant_info(name).causal:
                yield pytest.param(name, causal, id=f"{name}-{'causal' if causal else 'full'}")


@pytest.mark.slow
@pytest.mark.parametrize("name,causal", list(_autocast_cases()))
def test_training_step_under_autocast_is_close_to_float32(name, causal):
    # Mixed precision (torch.autocast, here CPU bfloat16): products inside custom autograd
    # Functions must not be cast behind the variant's back (mixed dtypes in backward).
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=64, heads=4, seq_len=128, causal=causal, **PARAMS.get(name, {}))
    x = torch.randn(2, 128, 64, requires_grad=True)
    reference = layer(x)
    reference.sum().backward()
    reference_grad, x.grad = x.grad, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    rel = ((out.float() - reference).norm() / reference.norm()).item()
    grad_rel = ((x.grad - reference_grad).norm() / reference_grad.norm()).item()
    assert rel < 5e-2 and grad_rel < 5e-2, f"{name}: relative error {rel:.2e}, gradient {grad_rel:.2e}"


def test_half_precision_inputs() -> None:
    for name, params in [("synthesizer", {"mode": "dense"}), ("synthesizer", {"mode": "random"}),
                         ("synthesizer", {"mode": "factorized", "k": 8}), ("aft", {"mode": "simple"}),
                         ("aft", {"mode": "full"}), ("aft", {"mode": "local", "window": 8})]:
        layer = f64_layer(name, 32, dtype=torch.bfloat16, **params)
        y = layer(torch.randn(1, 32, SMALL_DIM, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y).all(), (name, params)

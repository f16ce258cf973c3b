"""Sparse patterns (local, strided, longformer, bigbird) against a dense float64
reference with the same mask, plus the invariants of VARIANTS.md."""

from __future__ import annotations

import math

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square, dense_attention

# Small parameters so that the patterns are really sparse at N ~ 100.
SMALL = {
    "local": {"window": 16},
    "strided": {},
    "longformer": {"window": 20, "global_tokens": 3},
    "bigbird": {"block": 8, "random_blocks": 2},
}
CAUSAL = {"local": True, "strided": True, "longformer": True, "bigbird": False}
CASES = [(name, causal) for name in SMALL for causal in (False, True) if causal <= CAUSAL[name]]
HEADS, HEAD_DIM = 4, 8


# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


def core_of(name: str, n: int, causal: bool = False, **params: object) -> torch.nn.Module:
    params = {**SMALL[name], **params}
    layer = attnbench.build(name, dim=HEADS * HEAD_DIM, heads=HEADS, seq_len=n, causal=causal, **params)
    return layer.core


def qkv(n: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, batch, HEADS, n, HEAD_DIM, generator=gen, dtype=torch.float64).unbind(0)


def dense_mask(core: torch.nn.Module, name: str, n: int) -> torch.Tensor:
    """The variant's pattern as an (H, N, N) boolean mask (test only), True = may attend."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    heads = core.heads
    if name == "local":
        mask = ((i - j).abs() <= core.window).expand(heads, n, n)
    elif name == "strided":
        stride = core.stride if core.stride is not None else math.isqrt(n - 1) + 1
        local = (i - j).abs() < stride
        strided = (i - j) % stride == 0
        n_local = heads - heads // 2
        mask = torch.stack([local] * n_local + [strided] * (heads - n_local))
    elif name == "longformer":
        g = core.global_tokens
        mask = (((i - j).abs() <= core.window // 2) | (i < g) | (j < g)).expand(heads, n, n)
    elif name == "bigbird":
        if core.is_full(n):
            return torch.ones(heads, n, n, dtype=torch.bool)
        idx, valid = core.key_blocks(n)
        n_blocks = -(-n // core.block)
        blocks = torch.ones(heads, n_blocks, n_blocks, dtype=torch.bool)
        middle = torch.zeros(heads, n_blocks - 2, n_blocks, dtype=torch.bool)
        middle.scatter_(2, idx, True)
        blocks[:, 1:-1] = middle
        mask = blocks.repeat_interleave(core.block, 1).repeat_interleave(core.block, 2)[:, :n, :n]
    else:  # pragma: no cover
        raise AssertionError(name)
    return mask & (j <= i) if core.causal else mask


@pytest.mark.parametrize("n", [96, 100])
@pytest.mark.parametrize(("name", "causal"), CASES)
def test_matches_dense_reference(name: str, causal: bool, n: int) -> None:
    core = core_of(name, n, causal)
    q, k, v = qkv(n)
    expected = dense_attention(q, k, v, dense_mask(core, name, n))
    torch.testing.assert_close(core(q, k, v), expected)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "params"), [
    ("local", {"window": 64}), ("local", {"window": 1000}),
    ("longformer", {"window": 128, "global_tokens": 1}), ("longformer", {"window": 10, "global_tokens": 64}),
])
def test_covering_everything_is_full_attention(name: str, params: dict, causal: bool) -> None:
    n = 64
    q, k, v = qkv(n)
    allowed = torch.ones(n, n, dtype=torch.bool).tril() if causal else None
    torch.testing.assert_close(core_of(name, n, causal, **params)(q, k, v), dense_attention(q, k, v, allowed))


@pytest.mark.parametrize("n", [96, 8 * 9, 8 * 9 + 1])
def test_bigbird_full_up_to_threshold(n: int) -> None:
    core = core_of("bigbird", n)  # block 8, 2 random: full while N <= (5 + 2·2)·8 = 72
    q, k, v = qkv(n)
    out = core(q, k, v)
    full = dense_attention(q, k, v)
    if n <= 72:
        torch.testing.assert_close(out, full)
    else:
        assert not torch.allclose(out, full)


@pytest.mark.parametrize("causal", [False, True])
def test_strided_extremes(causal: bool) -> None:
    """l ≥ N: the local heads are full attention and the strided heads see only
    themselves; l = 1: the strided heads are full attention."""
    n = 50
    q, k, v = qkv(n)
    allowed = torch.ones(n, n, dtype=torch.bool).tril() if causal else None
    full = dense_attention(q, k, v, allowed)
    out = core_of("strided", n, causal, stride=n)(q, k, v)
    torch.testing.assert_close(out[:, :2], full[:, :2])
    torch.testing.assert_close(out[:, 2:], v[:, 2:])
    out = core_of("strided", n, causal, stride=1)(q, k, v)
    torch.testing.assert_close(out[:, 2:], full[:, 2:])
    torch.testing.assert_close(out[:, :2], v[:, :2])


def small_layer(name: str, n: int, causal: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=HEADS * HEAD_DIM, heads=HEADS, seq_len=n, causal=causal, **SMALL[name])
    return layer.double()


@pytest.mark.parametrize("name", [name for name, causal in CASES if causal])
def test_causal_output_ignores_the_future(name: str) -> None:
    n, t = 100, 57
    layer = small_layer(name, n, causal=True)
    x = torch.randn(2, n, HEADS * HEAD_DIM, dtype=torch.float64)
    y = x.clone()
    y[:, t + 1:] = torch.randn_like(y[:, t + 1:])
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[:, :t + 1], layer(y)[:, :t + 1])


@pytest.mark.parametrize(("name", "causal"), CASES)
def test_output_ignores_keys_outside_the_pattern(name: str, causal: bool) -> None:
    n = 100
    core = core_of(name, n, causal)
    mask = dense_mask(core, name, n)
    q, k, v = qkv(n)
    out = core(q, k, v)
    for t in (40, 70) if name == "bigbird" else (40, 99):  # bigbird's last block is global
        outside = ~mask[:, t]  # (H, N)
        assert outside.any()
        k2 = torch.where(outside[None, :, :, None], torch.randn_like(k), k)
        v2 = torch.where(outside[None, :, :, None], torch.randn_like(v), v)
        out2 = core(q, k2, v2)
        torch.testing.assert_close(out2[:, :, t], out[:, :, t])
        assert not torch.allclose(out2, out)  # other rows did see the change


NO_SQUARE = {
    "local": {"window": 64},
    "strided": {},
    "longformer": {"window": 128, "global_tokens": 2},
    "bigbird": {"block": 16},
}


@pytest.mark.parametrize(("name", "causal"), CASES)
def test_no_hidden_square_tensor(name: str, causal: bool) -> None:
    n = 1024  # > 3·dim, so the projection weights do not count
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, causal=causal, **NO_SQUARE[name])
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)


@pytest.mark.parametrize(("name", "n", "expected"), [
    ("local", 4096, 2.0),
    ("longformer", 4096, 2.0),
    ("bigbird", 8192, 2.0),
    ("strided", 4096, 2 * math.sqrt(2)),
    ("strided", 10_000, 2 * math.sqrt(2)),
])
def test_flops_grow_as_claimed(name: str, n: int, expected: float) -> None:
    small = attnbench.build(name, dim=512, heads=8, seq_len=n)
    large = attnbench.build(name, dim=512, heads=8, seq_len=2 * n)
    ratio = large.core.flops(1, 2 * n) / small.core.flops(1, n)
    assert ratio == pytest.approx(expected, rel=0.05)
    assert large.flops(1, 2 * n) > large.core.flops(1, 2 * n)


@pytest.mark.parametrize(("name", "causal"), CASES)
def test_gradients_reach_every_parameter(name: str, causal: bool) -> None:
    n = 100
    layer = small_layer(name, n, causal)
    x = torch.randn(2, n, HEADS * HEAD_DIM, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_gradients_match_dense_reference() -> None:
    n = 100
    for name, causal in CASES:
        core = core_of(name, n, causal)
        q, k, v = (t.requires_grad_() for t in qkv(n))
        grads = torch.autograd.grad(core(q, k, v).square().sum(), (q, k, v))
        ref = torch.autograd.grad(dense_attention(q, k, v, dense_mask(core, name, n)).square().sum(),
                                  (q, k, v))
        for got, want in zip(grads, ref, strict=True):
            torch.testing.assert_close(got, want)


def test_bigbird_random_blocks_follow_the_seed() -> None:
    n = 200
    q, k, v = qkv(n)
    first = core_of("bigbird", n, seed=1)(q, k, v)
    torch.testing.assert_close(core_of("bigbird", n, seed=1)(q, k, v), first, rtol=0, atol=0)
    assert not torch.allclose(core_of("bigbird", n, seed=2)(q, k, v), first)
    idx, _ = core_of("bigbird", n, seed=1).key_blocks(n)
    assert not torch.equal(idx[0], idx[1])  # each head draws its own random blocks


def test_bigbird_random_blocks_avoid_the_fixed_ones() -> None:
    core = core_of("bigbird", 1000)  # 125 blocks of 8
    idx, valid = core.key_blocks(1000)
    assert idx.shape == (HEADS, 123, 5 + 2)
    for row in idx.flatten(0, 1).tolist():
        assert len(set(row)) == 7 - (row[0] == 0) - (row[2] == 124)
    assert valid.sum() == HEADS * (123 * 7 - 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("name", "causal"), CASES)
def test_half_precision(name: str, causal: bool, dtype: torch.dtype) -> None:
    n = 100
    core = core_of(name, n, causal)
    q, k, v = qkv(n)
    expected = dense_attention(q, k, v, dense_mask(core, name, n))
    out = core(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=0.05, rtol=0.05)


def test_defaults_and_registry() -> None:
    assert attnbench.variant_info("local").defaults == {"window": 256}
    assert attnbench.variant_info("strided").defaults == {"stride": None}
    assert attnbench.variant_info("longformer").defaults == {"window": 512, "global_tokens": 1}
    assert attnbench.variant_info("bigbird").defaults == {"block": 64, "random_blocks": 3, "seed": 0}
    for name in SMALL:
        info = attnbench.variant_info(name)
        assert info.family == "sparse" and info.paper and info.complexity
        assert info.causal == CAUSAL[name]


@pytest.mark.parametrize(("name", "params"), [
    ("local", {"window": 0}), ("local", {"window": 2.5}), ("local", {"window": True}),
    ("strided", {"stride": 0}), ("longformer", {"window": 0}), ("longformer", {"global_tokens": -1}),
    ("bigbird", {"block": 0}), ("bigbird", {"random_blocks": -1}), ("bigbird", {"seed": "a"}),
    ("local", {"windw": 8}),
])
def test_bad_parameters(name: str, params: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(params))):
        attnbench.build(name, dim=32, heads=4, seq_len=64, **params)


def test_bigbird_refuses_causal() -> None:
    with pytest.raises(ValueError, match="causal"):
        attnbench.build("bigbird", dim=32, heads=4, seq_len=64, causal=True)

"""Memory-compressed attention (lowrank.py, "compressed"): the invariants of
VARIANTS.md ("The rest of the seeds' mechanisms") in float64 against explicit
reference forms, causality and the convolution it stands for."""

from __future__ import annotations

import pytest
import torch

import attnbench
from attnbench.testing import dense_attention
from attnbench.variants.lowrank import CompressedAttention

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def core(n: int = 48, heads: int = 3, head_dim: int = 8, causal: bool = False, **params) -> CompressedAttention:
    layer = attnbench.build("compressed", dim=heads * head_dim, heads=heads, seq_len=n, causal=causal, **params)
    c = layer.core.to(F64)
    with torch.no_grad():  # the learned null slot, non-zero so that it counts
        c.null_k.normal_()
        c.null_v.normal_()
    return c


def qkv(n: int, heads: int = 3, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, heads, n, d, generator=g, dtype=F64) for _ in range(3))


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
    q, k, v = qkv(48)
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
    q, k, v = qkv(n)
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
    from attnbench.testing import training_step
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

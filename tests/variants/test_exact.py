"""Exact attention (attnbench.variants.exact): softmax and sdpa equal the dense
reference and each other, rows sum to one, causal output ignores the future."""

import pytest
import torch

import attnbench
from attnbench.testing import dense_attention
from attnbench.variants.layer import causal_mask
from tests.helpers import qkv


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", ["softmax", "sdpa"])
def test_exact_equals_dense_reference(name, causal):
    q, k, v = qkv(h=2, n=96, seed=1)
    core = attnbench.build(name, dim=32, heads=2, seq_len=96, causal=causal).core
    expected = dense_attention(q, k, v, causal_mask(96, 96) if causal else None)
    torch.testing.assert_close(core(q, k, v), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_and_sdpa_agree_as_layers(causal):
    x = torch.randn(2, 80, 32, dtype=torch.float64)
    a = attnbench.build("softmax", dim=32, heads=4, seq_len=80, causal=causal).double()
    b = attnbench.build("sdpa", dim=32, heads=4, seq_len=80, causal=causal).double()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))


def test_attention_rows_sum_to_one():
    # With v = identity columns the output rows are the attention rows.
    n = 48
    q, k, _ = qkv(h=2, n=n, d=8, seed=1)
    v = torch.eye(n, dtype=torch.float64).expand(2, 2, n, n)
    for causal in (False, True):
        out = attnbench.build("softmax", dim=16, heads=2, seq_len=n, causal=causal).core(q, k, v)
        torch.testing.assert_close(out.sum(-1), torch.ones(2, 2, n, dtype=torch.float64))
        if causal:
            assert torch.all(out.triu(1) == 0)


@pytest.mark.parametrize("name", ["softmax", "sdpa"])
def test_causal_output_ignores_the_future(name):
    layer = attnbench.build(name, dim=32, heads=2, seq_len=64, causal=True).double()
    x = torch.randn(1, 64, 32, dtype=torch.float64)
    y = x.clone()
    y[:, 40:] = torch.randn(1, 24, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[:, :40], layer(y)[:, :40])
    assert not torch.allclose(layer(x)[:, 40:], layer(y)[:, 40:])

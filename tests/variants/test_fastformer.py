"""Fastformer (attnbench.variants.fastformer): the paper's equations, keys pooled
after the global query product, permutation equivariance, no causal mode, no
N×N tensor."""

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square


def _fastformer_reference(layer, x):
    """The paper's equations written out token by token (float64)."""
    b, n, _ = x.shape
    h, d = layer.heads, layer.head_dim
    q_all = layer.to_q(x)
    k_all = layer.to_k(x)
    v_all = q_all if layer.to_v is None else layer.to_v(x)
    out = torch.empty_like(q_all)
    u = torch.empty_like(q_all)
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        q, k, v = q_all[..., sl], k_all[..., sl], v_all[..., sl]
        alpha = torch.softmax((q @ layer.w_q[head]) / d ** 0.5, dim=-1)  # (b, n)
        q_g = (alpha[..., None] * q).sum(1, keepdim=True)
        p = q_g * k
        beta = torch.softmax((p @ layer.w_k[head]) / d ** 0.5, dim=-1)
        k_g = (beta[..., None] * p).sum(1, keepdim=True)
        u[..., sl] = k_g * v
    out = layer.transform(u) + q_all
    return out


@pytest.mark.parametrize("share_qv", [True, False])
def test_fastformer_matches_the_paper_equations(share_qv):
    layer = attnbench.build("fastformer", dim=32, heads=4, seq_len=50, share_qv=share_qv).double()
    x = torch.randn(2, 50, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _fastformer_reference(layer, x))


def test_fastformer_pools_keys_after_the_global_query_product():
    # The defect to avoid pools the raw keys: then scaling the global query
    # direction would not change the key pooling weights. With the paper's form,
    # changing w_q changes the result even when values are fixed.
    layer = attnbench.build("fastformer", dim=16, heads=2, seq_len=20).double()
    x = torch.randn(1, 20, 16, dtype=torch.float64)
    before = layer(x)
    with torch.no_grad():
        layer.w_q.mul_(3.0)
    assert not torch.allclose(before, layer(x))


def test_fastformer_is_permutation_equivariant():
    layer = attnbench.build("fastformer", dim=32, heads=4, seq_len=40).double()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    perm = torch.randperm(40)
    torch.testing.assert_close(layer(x)[:, perm], layer(x[:, perm]))


def test_fastformer_with_zero_score_vectors_reduces_to_means():
    layer = attnbench.build("fastformer", dim=16, heads=2, seq_len=30).double()
    with torch.no_grad():
        layer.w_q.zero_()
        layer.w_k.zero_()
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    q = layer.to_q(x)
    k = layer.to_k(x)
    q_g = q.mean(1, keepdim=True)
    k_g = (q_g * k).mean(1, keepdim=True)
    expected = layer.transform(k_g * q) + q
    torch.testing.assert_close(layer(x), expected)


def test_fastformer_refuses_causal():
    with pytest.raises(ValueError, match="does not support causal"):
        attnbench.build("fastformer", dim=32, heads=2, seq_len=64, causal=True)


@pytest.mark.parametrize("name,params", [("fastformer", {})])
def test_no_hidden_square_tensor(name, params):
    n = 1024
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, **params)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)

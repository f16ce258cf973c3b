"""The four variants of the backbone: softmax, sdpa, linformer, fastformer."""

import pytest
import torch

import attnbench
from attnbench.testing import assert_no_square, dense_attention
from attnbench.variants.layer import causal_mask
from tests.conftest import qkv


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", ["softmax", "sdpa"])
def test_exact_equals_dense_reference(name, causal):
    q, k, v = qkv(n=96)
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
    q, k, _ = qkv(n=n, d=8)
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


@pytest.mark.parametrize("perm", [False, True])
def test_linformer_with_identity_or_permutation_projection_is_full_attention(perm):
    n = 64
    core = attnbench.build("linformer", dim=32, heads=2, seq_len=n, k=n).core.double()
    eye = torch.eye(n, dtype=torch.float64)
    if perm:
        eye = eye[torch.randperm(n)]
    with torch.no_grad():
        core.proj_k.copy_(eye)
        core.proj_v.copy_(eye)
    q, k, v = qkv(n=n)
    torch.testing.assert_close(core(q, k, v), dense_attention(q, k, v))


def test_linformer_refuses_causal_and_wrong_length():
    with pytest.raises(ValueError, match="causal"):
        attnbench.build("linformer", dim=32, heads=2, seq_len=64, causal=True)
    layer = attnbench.build("linformer", dim=32, heads=2, seq_len=64, k=16)
    with pytest.raises(ValueError, match="seq_len 64"):
        layer(torch.randn(1, 32, 32))


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


@pytest.mark.parametrize("name,params", [("linformer", {"k": 32}), ("fastformer", {})])
def test_no_hidden_square_tensor(name, params):
    n = 1024
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, **params)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).sum().backward(), n)


def test_softmax_does_build_the_square_matrix():
    # The check above can fail: it sees softmax's N×N matrix.
    from attnbench.testing import large_square_tensors

    layer = attnbench.build("softmax", dim=32, heads=2, seq_len=256)
    assert large_square_tensors(lambda: layer(torch.randn(1, 256, 32)), 256)

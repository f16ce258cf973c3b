"""Clustered variants (reformer, routing, sinkhorn): the VARIANTS.md invariants
against float64 dense references, causality, no hidden N×N, FLOPs growth,
gradients, seeds and parameter validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attnbench
from attnbench.testing import assert_no_square, dense_attention
from attnbench.variants.clustered import ReformerAttention, RoutingAttention, SinkhornAttention
from attnbench.variants.layer import causal_mask

H, D = 2, 16


# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


def _qkv(n: int, seed: int = 0, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, H, n, D, generator=gen, dtype=torch.float64) for _ in range(3))


def _shared_qk_reference(q: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Full shared-QK attention: keys are the normalised queries, self-logit −5e4."""
    n = q.shape[-2]
    scores = q @ F.normalize(q, dim=-1).transpose(-1, -2) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(torch.eye(n, dtype=torch.bool), -5e4)
    if causal:
        scores = scores.masked_fill(~causal_mask(n, n), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


# --- invariants -------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "bucket", "hashes"), [(128, 64, 1), (100, 64, 1), (128, 64, 3), (48, 64, 2)])
def test_reformer_two_chunks_equal_full_shared_qk(causal: bool, n: int, bucket: int, hashes: int) -> None:
    # Two chunks (or one): every token sees every other one in every round.
    q, _, v = _qkv(n)
    core = ReformerAttention(H, D, n, causal, bucket_size=bucket, n_hashes=hashes)
    torch.testing.assert_close(core(q, q, v), _shared_qk_reference(q, v, causal), rtol=1e-10, atol=1e-10)


def _lsh_reference(core: ReformerAttention, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dense LSH attention given the core's hashes: per round, each token sees the
    tokens of its chunk and of the previous chunk (cyclic) in (bucket, position)
    order; rounds combined with weights softmax over rounds of their logsumexp."""
    n = q.shape[-2]
    c = core.chunk(n)
    chunks, _, n_buckets = core._layout(n)
    keys = F.normalize(q, dim=-1)
    scores = (q @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(torch.eye(n, dtype=torch.bool), -5e4)
    buckets = core.buckets(keys, n_buckets)  # (B, H, rounds, N)
    outs, lses = [], []
    for r in range(core.n_hashes):
        chunk = (buckets[:, :, r] * n + torch.arange(n)).argsort(-1).argsort(-1) // c  # chunk of each token
        allowed = (chunk[..., :, None] == chunk[..., None, :]) | ((chunk[..., :, None] - 1) % chunks
                                                                 == chunk[..., None, :])
        if core.causal:
            allowed = allowed & causal_mask(n, n)
        masked = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.softmax(masked, dim=-1) @ v)
        lses.append(torch.logsumexp(masked, dim=-1))
    weights = torch.softmax(torch.stack(lses), dim=0).unsqueeze(-1)
    return (weights * torch.stack(outs)).sum(0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [128, 100])
def test_reformer_equals_dense_lsh_reference(causal: bool, n: int) -> None:
    q, _, v = _qkv(n, batch=2)
    core = ReformerAttention(H, D, n, causal, bucket_size=16, n_hashes=3)
    torch.testing.assert_close(core(q, q, v), _lsh_reference(core, q, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "n_buckets"), [(100, 6), (128, 10), (37, 4)])
def test_reformer_with_a_fixed_bucket_count_equals_dense_lsh_reference(causal: bool, n: int, n_buckets: int) -> None:
    # LRA's released setting: n_buckets buckets, chunks of ⌈N/n_buckets⌉ tokens.
    q, _, v = _qkv(n, batch=2)
    core = ReformerAttention(H, D, n, causal, n_hashes=2, n_buckets=n_buckets)
    assert core.chunk(n) == -(-n // n_buckets) and core._layout(n)[2] == n_buckets
    torch.testing.assert_close(core(q, q, v), _lsh_reference(core, q, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_reformer_with_two_buckets_is_full_shared_qk(causal: bool) -> None:
    q, _, v = _qkv(90)
    core = ReformerAttention(H, D, 90, causal, n_hashes=1, n_buckets=2)
    torch.testing.assert_close(core(q, q, v), _shared_qk_reference(q, v, causal), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_buckets", [0, 3, 1.5, True])
def test_reformer_n_buckets_must_be_even(n_buckets) -> None:
    with pytest.raises(ValueError, match="reformer n_buckets"):
        ReformerAttention(H, D, 64, n_buckets=n_buckets)


def test_reformer_fixed_buckets_cost_grows_quadratically() -> None:
    lra = ReformerAttention(4, 64, 1024, n_hashes=1, n_buckets=10)
    assert 3.5 < lra.flops(1, 8192) / lra.flops(1, 4096) <= 4.1
    paper = ReformerAttention(4, 64, 1024, n_hashes=1, bucket_size=128)
    assert paper.flops(1, 8192) / paper.flops(1, 4096) < 2.3


def test_reformer_hash_is_argmax_of_plus_minus_rotation() -> None:
    q, _, _ = _qkv(128)
    core = ReformerAttention(H, D, 128, bucket_size=16, n_hashes=3)
    rotated = (q @ core.rotations(8, q.device, q.dtype)).unflatten(-1, (3, 4))  # 8 buckets, 3 rounds
    expected = torch.cat([rotated, -rotated], dim=-1).argmax(-1).transpose(-1, -2)
    assert torch.equal(core.buckets(q, 8), expected)
    assert len(expected.unique()) == 8


def test_reformer_token_with_only_itself_attends_to_itself() -> None:
    q, _, v = _qkv(128)
    out = ReformerAttention(H, D, 128, causal=True, bucket_size=16, n_hashes=2)(q, q, v)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [128, 100])
def test_routing_one_cluster_equals_full(causal: bool, n: int) -> None:
    q, k, v = _qkv(n)
    core = RoutingAttention(H, D, n, causal, clusters=1)
    allowed = causal_mask(n, n) if causal else None
    torch.testing.assert_close(core(q, k, v), dense_attention(q, k, v, allowed), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_routing_equals_per_cluster_reference(causal: bool) -> None:
    n = 100
    q, k, v = _qkv(n, batch=2)
    core = RoutingAttention(H, D, n, causal, clusters=8).eval()  # eval: routes stay fixed
    q_idx, k_idx = core.route(q, k)
    assert q_idx.shape == (2, H, 8, 13)
    total, count = torch.zeros_like(q), torch.zeros(q.shape[:-1], dtype=q.dtype)
    for b in range(2):
        for h in range(H):
            for qi, ki in zip(q_idx[b, h], k_idx[b, h], strict=True):
                allowed = ki[None, :] <= qi[:, None] if causal else torch.ones(len(qi), len(ki), dtype=torch.bool)
                seen = allowed.any(-1)  # a query seeing no key of the cluster takes nothing from it
                qi, allowed = qi[seen], allowed[seen]
                total[b, h, qi] += dense_attention(q[b, h, qi], k[b, h, ki], v[b, h, ki], allowed)
                count[b, h, qi] += 1
    expected = total / count.clamp(min=1).unsqueeze(-1)
    torch.testing.assert_close(core(q, k, v), expected, rtol=1e-10, atol=1e-10)


def test_routing_centroids_ema_in_training_only() -> None:
    q, k, v = _qkv(64)
    core = RoutingAttention(H, D, 64)
    assert "centroids" in dict(core.named_buffers()) and not list(core.parameters())
    assert core.clusters == 8  # ⌈√64⌉
    before = core.centroids.clone()
    core.eval()
    core(q, k, v)
    torch.testing.assert_close(core.centroids, before, rtol=0, atol=0)
    core.train()
    core(q, k, v)
    assert not torch.equal(core.centroids, before)
    torch.testing.assert_close(core.centroids.norm(dim=-1), torch.ones(H, 8))


@pytest.mark.parametrize("n", [128, 100])
def test_sinkhorn_one_block_equals_full(n: int) -> None:
    q, k, v = _qkv(n)
    core = SinkhornAttention(H, D, n, block=128).double()
    torch.testing.assert_close(core(q, k, v), dense_attention(q, k, v), rtol=1e-10, atol=1e-10)


def test_sinkhorn_sort_matrix_is_doubly_stochastic() -> None:
    q, k, v = _qkv(256)
    core = SinkhornAttention(H, D, 256, block=16).double()
    with torch.no_grad():  # sharper logits than at init, still within 5 iterations
        core.sort_net[2].weight.mul_(4)
    p = core.sort_matrix(k)
    assert p.shape == (1, H, 16, 16) and (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(1, H, 16, dtype=p.dtype), rtol=0, atol=1e-3)
    torch.testing.assert_close(p.sum(-2), torch.ones(1, H, 16, dtype=p.dtype), rtol=0, atol=1e-6)


def test_sinkhorn_equals_own_plus_sorted_block_reference() -> None:
    n, bs = 100, 16  # 7 blocks, the last one padded
    q, k, v = _qkv(n, batch=2)
    core = SinkhornAttention(H, D, n, block=bs).double()
    choice = core.sort_matrix(k).argmax(-1)  # (B, H, blocks)
    block = torch.arange(n) // bs
    sorted_block = choice[..., block]  # (B, H, N): the block each query's block is sorted to
    allowed = (block[:, None] == block[None, :]) | (block == sorted_block.unsqueeze(-1))
    torch.testing.assert_close(core(q, k, v), dense_attention(q, k, v, allowed), rtol=1e-10, atol=1e-10)


def test_sinkhorn_values_follow_the_keys_permutation() -> None:
    # Values sorted by the same permutation as keys (not the sorted keys used as values).
    n, bs = 64, 16
    q, k, v = _qkv(n)
    core = SinkhornAttention(H, D, n, block=bs).double()
    out = core(q, k, v)
    torch.testing.assert_close(core(q, k, torch.zeros_like(v)), torch.zeros_like(out))
    assert not torch.allclose(out, core(q, k, k))


# --- causality -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "params"), [("reformer", {"bucket_size": 16, "n_hashes": 2}),
                                              ("routing", {"clusters": 8})])
def test_causal_values_after_t_do_not_reach_t(name: str, params: dict) -> None:
    # With fixed hashes / routes: no weight on a later key.
    n, t = 128, 70
    cls = ReformerAttention if name == "reformer" else RoutingAttention
    core = cls(H, D, n, causal=True, **params).eval()
    q, k, v = _qkv(n)
    if name == "reformer":
        k = q
    v2 = v.clone()
    v2[:, :, t + 1:] += torch.randn_like(v2[:, :, t + 1:])
    out, out2 = core(q, k, v), core(q, k, v2)
    torch.testing.assert_close(out[:, :, : t + 1], out2[:, :, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(out[:, :, t + 1:], out2[:, :, t + 1:])


@pytest.mark.parametrize(("name", "params"), [("reformer", {"bucket_size": 64, "n_hashes": 1}),
                                              ("routing", {"clusters": 1})])
def test_causal_layer_inputs_after_t_do_not_reach_t(name: str, params: dict) -> None:
    n, t = 128, 50
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=H, seq_len=n, causal=True, **params).double().eval()
    x = torch.randn(1, n, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
    out, out2 = layer(x), layer(x2)
    torch.testing.assert_close(out[:, : t + 1], out2[:, : t + 1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out[:, t + 1:], out2[:, t + 1:])


def test_sinkhorn_refuses_causal() -> None:
    assert not attnbench.variant_info("sinkhorn").causal
    with pytest.raises(ValueError):
        attnbench.build("sinkhorn", dim=32, heads=2, seq_len=64, causal=True)


# --- cost ------------------------------------------------------------------------------

SUBQUADRATIC = [("reformer", False, {"bucket_size": 64}), ("reformer", True, {"bucket_size": 64}),
                ("routing", False, {}), ("routing", True, {}), ("sinkhorn", False, {"block": 64})]


@pytest.mark.parametrize(("name", "causal", "params"), SUBQUADRATIC)
def test_no_square_tensor_forward_and_backward(name: str, causal: bool, params: dict) -> None:
    n = 1024  # buckets / blocks of 64 and 32 clusters of 32: all ≤ N/8; projection (3·32, 32)
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=n, causal=causal, **params)
    x = torch.randn(1, n, 32, requires_grad=True)
    assert_no_square(lambda: layer(x).square().sum().backward(), n)


@pytest.mark.parametrize(("name", "params", "growth", "tol"), [
    ("reformer", {"bucket_size": 64, "n_hashes": 4}, 2.0, 0.2),  # + small n·N²d/c hashing term
    ("sinkhorn", {"block": 64}, 2.0, 0.05),  # + small (N/b)² sort net
    ("routing", {}, 2 * math.sqrt(2), 0.15),  # ⌈√N⌉ clusters of N/⌈√N⌉
])
def test_flops_growth(name: str, params: dict, growth: float, tol: float) -> None:
    flops = [attnbench.build(name, dim=512, heads=8, seq_len=n, **params).core.flops(1, n) for n in (2048, 4096)]
    assert abs(flops[1] / flops[0] - growth) < tol, flops[1] / flops[0]


def test_reformer_flops_count_every_round() -> None:
    one, four = (ReformerAttention(8, 64, 4096, n_hashes=r).flops(1, 4096) for r in (1, 4))
    assert 3.5 < four / one <= 4


# --- training, seeds, dtypes, parameters -----------------------------------------------

@pytest.mark.parametrize(("name", "params"), [("reformer", {"bucket_size": 16}), ("routing", {}),
                                              ("sinkhorn", {"block": 16})])
def test_gradients_reach_every_parameter(name: str, params: dict) -> None:
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=100, **params)
    layer(torch.randn(2, 100, 32)).square().sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_reformer_seed_repeats_exactly() -> None:
    q, _, v = _qkv(256)

    def run(seed: int) -> torch.Tensor:
        return ReformerAttention(H, D, 256, bucket_size=16, n_hashes=2, seed=seed)(q, q, v)

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.allclose(run(0), run(1))
    state = torch.random.get_rng_state()
    run(3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


@pytest.mark.parametrize(("name", "params"), [("reformer", {"bucket_size": 16}), ("routing", {}),
                                              ("sinkhorn", {"block": 16})])
def test_bfloat16_inputs(name: str, params: dict) -> None:
    torch.manual_seed(0)
    layer = attnbench.build(name, dim=32, heads=2, seq_len=100, **params)
    ref = layer(torch.randn(1, 100, 32))
    x = torch.randn(1, 100, 32)
    out = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all() and ref.shape == out.shape


def test_defaults_match_the_table() -> None:
    assert attnbench.variant_info("reformer").defaults == {"bucket_size": 64, "n_hashes": 4, "seed": 0,
                                                           "n_buckets": None}
    assert attnbench.variant_info("routing").defaults == {"clusters": None}
    assert attnbench.variant_info("sinkhorn").defaults == {"block": 64, "iters": 5, "temperature": 0.75}
    assert attnbench.variant_info("reformer").causal and attnbench.variant_info("routing").causal
    assert attnbench.build("routing", dim=32, heads=2, seq_len=1000).core.clusters == 32
    assert attnbench.build("reformer", dim=32, heads=2, seq_len=64).n_proj == 2  # shared q = k


@pytest.mark.parametrize(("name", "params"), [
    ("reformer", {"bucket_size": 0}), ("reformer", {"n_hashes": 0}), ("reformer", {"n_hashes": 1.5}),
    ("reformer", {"seed": "a"}), ("reformer", {"bucket_size": True}), ("reformer", {"buckets": 4}),
    ("routing", {"clusters": 0}), ("routing", {"clusters": 65}), ("routing", {"clusters": 2.0}),
    ("sinkhorn", {"block": 0}), ("sinkhorn", {"iters": 0}), ("sinkhorn", {"temperature": 0}),
    ("sinkhorn", {"temperature": -1.0}), ("sinkhorn", {"temperature": "hot"}),
])
def test_bad_parameters_raise(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        attnbench.build(name, dim=32, heads=2, seq_len=64, **params)


def test_sinkhorn_longer_than_built_raises() -> None:
    q, k, v = _qkv(80)
    with pytest.raises(ValueError, match="seq_len"):
        SinkhornAttention(H, D, 64, block=16).double()(q, k, v)

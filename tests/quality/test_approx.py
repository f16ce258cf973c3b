"""Approximation error against exact softmax attention (attnbench.quality.approx)."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.quality import NOT_AN_APPROXIMATION, REGIMES
from attnbench.quality.approx import (
    implied_rows,
    make_inputs,
    measure_approx,
    row_entropy,
)
from attnbench.testing import dense_attention
from attnbench.variants import build, variant_info, variant_names

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("name", ["softmax", "sdpa"])
def test_exact_variants_have_no_error(name: str, regime: str) -> None:
    r = measure_approx(name, 128, regime, seed=1, dim=64, heads=2)
    assert r.status == "ok" and r.rows == "read"
    assert r.output_error < 1e-12 and r.row_error < 1e-12 and r.row_tv < 1e-12


@pytest.mark.parametrize("regime", REGIMES)
def test_local_window_covering_everything_is_exact(regime: str) -> None:
    r = measure_approx("local", 96, regime, dim=64, heads=2, params={"window": 96})
    assert r.output_error < 1e-12 and r.row_error < 1e-12


def test_local_window_smaller_than_n_is_not_exact() -> None:
    r = measure_approx("local", 256, "peaked", dim=64, heads=2, params={"window": 16})
    # The distant match lies outside the band: about half of the exact mass is missed.
    assert r.row_tv > 0.2 and r.output_error > 0.2


def test_performer_error_falls_as_features_grow() -> None:
    def error(features: int, seed: int) -> float:
        return measure_approx("performer", 256, "gaussian", seed=seed, dim=256, heads=4,
                              params={"features": features, "seed": seed}).output_error

    few, many = [error(16, s) for s in range(4)], [error(256, s) for s in range(4)]
    assert all(m < f for f, m in zip(few, many, strict=True))
    assert sum(many) < 0.9 * sum(few)


def test_rfa_error_falls_as_features_grow() -> None:
    def error(features: int, seed: int) -> float:
        return measure_approx("rfa", 256, "gaussian", seed=seed, dim=256, heads=4,
                              params={"features": features, "seed": seed}).output_error

    few, many = [error(8, s) for s in range(4)], [error(512, s) for s in range(4)]
    assert sum(many) < 0.9 * sum(few)


@pytest.mark.slow
def test_nystrom_error_falls_as_landmarks_grow() -> None:
    def error(landmarks: int, **extra: int) -> float:
        return sum(measure_approx("nystrom", 256, "gaussian", seed=s, dim=64, heads=2,
                                  params={"landmarks": landmarks, **extra}).output_error for s in range(3))

    assert error(128) < error(32) < error(8)
    # One landmark per token and a converged pseudo-inverse: exact.
    assert error(256, pinv_iters=30) < 1e-9


@pytest.mark.parametrize("name", ["synthesizer", "fastformer", "aft", "lightconv", "dynamicconv"])
def test_mechanisms_that_do_not_approximate_are_marked(name: str) -> None:
    r = measure_approx(name, 64, "gaussian", dim=64, heads=2)
    assert r.status == NOT_AN_APPROXIMATION
    assert r.output_error is None and r.row_error is None
    assert r.to_dict()["status"] == NOT_AN_APPROXIMATION


def test_declared_rows_reproduce_every_core_output() -> None:
    # linear_in_values is a promise: A read back with one-hot values must give out = A v.
    n = 80
    for name in variant_names():
        layer = build(name, dim=64, heads=2, seq_len=n)
        core = getattr(layer, "core", None)
        if core is None or not core.linear_in_values or name.startswith("flex_"):
            continue
        core = core.double().eval()
        q, k, v = make_inputs("gaussian", 1, 2, n, 32, seed=3)
        if core.shared_qk:
            k = q
        with torch.no_grad():
            rows, out = implied_rows(core, q, k), core(q, k, v)
        torch.testing.assert_close(rows @ v, out, rtol=1e-9, atol=1e-9, msg=name)


def test_approximating_cores_are_declared() -> None:
    # Membership comes from the cores' declarations; every built-in q/k/v core declares it.
    declared = {name for name in variant_names()
                if getattr(getattr(build(name, dim=64, heads=2, seq_len=64), "core", None),
                           "approximates_softmax", False)}
    assert {"softmax", "sdpa", "local", "strided", "longformer", "bigbird", "reformer", "routing",
            "sinkhorn", "linformer", "nystrom", "linear", "performer", "compressed", "rfa"} <= declared
    assert not declared & {"synthesizer", "fastformer", "aft", "lightconv", "dynamicconv", "fnet", "gmlp",
                           "mixer", "efficient", "poolingformer"}


def test_reformer_is_measured_against_full_shared_qk_attention() -> None:
    # Two chunks: every token sees every other one, so LSH is exact against its counterpart.
    r = measure_approx("reformer", 128, "gaussian", dim=64, heads=2,
                       params={"bucket_size": 64, "n_hashes": 1})
    assert r.output_error < 1e-12


def test_regimes_are_deterministic_and_differ() -> None:
    a = make_inputs("peaked", 1, 2, 64, 16, seed=5)
    b = make_inputs("peaked", 1, 2, 64, 16, seed=5)
    c = make_inputs("peaked", 1, 2, 64, 16, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="unknown regime"):
        make_inputs("uniform", 1, 1, 8, 4, seed=0)


def test_peaked_attention_is_much_sharper_than_gaussian() -> None:
    def entropy(regime: str) -> float:
        q, k, _ = make_inputs(regime, 1, 4, 1024, 64, seed=0)
        return row_entropy(torch.softmax(q @ k.transpose(-1, -2) / 8, dim=-1))

    gaussian, peaked = entropy("gaussian"), entropy("peaked")
    assert gaussian > math.log(1024) - 1
    assert peaked < 0.25 * gaussian


def test_peaked_queries_find_a_local_and_a_distant_key() -> None:
    n = 512
    q, k, v = make_inputs("peaked", 1, 1, n, 64, seed=2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / 8, dim=-1)[0, 0]
    top2 = probs.topk(2, dim=-1).indices
    dist = (top2 - torch.arange(n)[:, None]).abs()
    circular = torch.minimum(dist, n - dist)
    near, far = circular.min(-1).values, circular.max(-1).values
    assert (near <= 3).float().mean() > 0.9 and (far >= n // 4).float().mean() > 0.9
    assert probs.topk(2, dim=-1).values.sum(-1).mean() > 0.8
    assert torch.allclose(dense_attention(q, k, v), probs @ v)


def test_error_of_a_bad_parameter_is_a_status() -> None:
    r = measure_approx("local", 64, "gaussian", dim=64, heads=2, params={"window": 0})
    assert r.status == "error" and "window" in r.error
    assert variant_info("local").causal  # causal measurements need no special case
    assert measure_approx("local", 64, "peaked", dim=64, heads=2, causal=True,
                          params={"window": 64}).output_error < 1e-12

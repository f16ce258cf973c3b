"""Synthesizer (attnbench.variants.synthesizer): the invariants of VARIANTS.md ("No
query-key products"), in float64 at small N: it is the softmax of its logits."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import (
    SMALL_DIM,
    SMALL_HEADS,
    case_ids,
    check_causal_output_ignores_the_future,
    check_flops_grow_as_claimed,
    check_gradients_reach_every_parameter,
    f64_layer,
    f64_randn,
)

# every mode; all of them fixed-length and quadratic in N
CASES = [("synthesizer", {"mode": "dense"}), ("synthesizer", {"mode": "random"}),
         ("synthesizer", {"mode": "factorized", "k": 8})]
CASE_IDS = case_ids(CASES)

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("name", "params", "choices"), [
    ("synthesizer", {"mode": "sparse"}, "dense, random, factorized"),
    ("synthesizer", {"k": 0}, "positive"),
])
def test_bad_parameters(name: str, params: dict, choices: str) -> None:
    with pytest.raises(ValueError, match=choices):
        f64_layer(name, 32, **params)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_fixed_length_modes_refuse_another_length(name: str, params: dict) -> None:
    layer = f64_layer(name, 32, **params)
    with pytest.raises(ValueError, match="seq_len 32"):
        layer(f64_randn(1, 24, SMALL_DIM))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_gradients_finite_and_reach_every_parameter(name: str, params: dict, causal: bool) -> None:
    check_gradients_reach_every_parameter(name, params, causal)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_causal_output_ignores_the_future(name: str, params: dict) -> None:
    check_causal_output_ignores_the_future(name, params)


@pytest.mark.parametrize(("name", "params", "growth"), [
    ("synthesizer", {"mode": "dense"}, 4.0), ("synthesizer", {"mode": "random"}, 4.0),
    ("synthesizer", {"mode": "factorized"}, 4.0),
])
def test_flops_grow_as_claimed(name: str, params: dict, growth: float) -> None:
    check_flops_grow_as_claimed(name, params, growth)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["dense", "random", "factorized"])
def test_synthesizer_equals_softmax_of_its_logits(mode: str, causal: bool) -> None:
    n = 24
    layer = f64_layer("synthesizer", n, causal=causal, mode=mode, k=4)
    x = f64_randn(2, n, SMALL_DIM)
    logits = layer.logits(x).expand(2, SMALL_HEADS, n, n)
    if causal:
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if causal:
        assert (probs.triu(1) == 0).all()
    v = layer.to_v(x).view(2, n, SMALL_HEADS, SMALL_DIM // SMALL_HEADS).transpose(1, 2)
    expected = layer.out((probs @ v).transpose(1, 2).reshape(2, n, SMALL_DIM))
    torch.testing.assert_close(layer(x), expected)
    if mode == "factorized":
        assert torch.linalg.matrix_rank(layer.logits(x)[0]) <= 4
    if mode == "dense":  # logits_i depend on x_i only
        x2 = x.clone()
        x2[:, 5] += 1
        changed = (layer.logits(x2) != layer.logits(x)).any(-1)
        assert changed[:, :, 5].all() and changed.sum() == 2 * SMALL_HEADS

"""Multi-query associative recall: the generator, training, divergence (attnbench.quality.mqar)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnbench.quality.mqar import IGNORE, MQARConfig, mqar_batch, train_mqar

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = MQARConfig(vocab=32, seq_len=16, pairs=2, dim=32, heads=2, steps=80, batch=16, lr=3e-3,
                  warmup=5, eval_sequences=64)


def batch(seed: int, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    args = {"batch": 64, "seq_len": 64, "vocab": 128, "pairs": 8, **kw}
    return mqar_batch(generator=torch.Generator().manual_seed(seed), **args)


def test_sequences_hold_pairs_then_queries_with_their_values() -> None:
    inputs, labels = batch(0)
    assert inputs.shape == labels.shape == (64, 64)
    assert inputs.min() >= 0 and inputs.max() < 128
    for x, y in zip(inputs, labels, strict=True):
        keys, values = x[0:16:2], x[1:16:2]
        assert len(set(keys.tolist())) == 8 and len(set(values.tolist())) == 8
        assert keys.min() >= 1 and keys.max() < 64 and values.min() >= 64
        asked = (y != IGNORE).nonzero().flatten()
        assert len(asked) == 8
        assert asked.min() >= 16 and bool(((asked - 16) % 2 == 0).all())
        answer = dict(zip(keys.tolist(), values.tolist(), strict=True))
        # the input at a queried position is a key; its label is that key's value
        assert sorted(x[asked].tolist()) == sorted(keys.tolist())
        assert all(answer[x[p].item()] == y[p].item() for p in asked)


def test_queries_favour_the_start_of_the_query_region() -> None:
    _, labels = batch(1, batch=512)
    offsets = ((labels != IGNORE).nonzero()[:, 1] - 16) // 2  # slot 0..23
    assert offsets.float().mean() < 11.5 - 1  # power law (a = 0.01), not uniform (mean 11.5)


def test_generator_is_deterministic_from_its_seed() -> None:
    a, b, c = batch(3), batch(3), batch(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_answers_are_never_ahead_of_the_query() -> None:
    # Why non-causal mixers may run: without filler no value follows the context, and
    # with it a query's value appears later only at the chance rate of random tokens.
    inputs, labels = batch(5, random_non_queries=False)
    assert bool((inputs[:, 16:] < 64).all())
    inputs, labels = batch(5, batch=512)
    later = [(inputs[b, p + 1:] == labels[b, p]).float().mean().item()
             for b, p in (labels != IGNORE).nonzero().tolist()]
    assert sum(later) / len(later) < 3 / 128


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="4·pairs"):
        MQARConfig(seq_len=16, pairs=5)
    with pytest.raises(ValueError, match="even"):
        MQARConfig(seq_len=15)
    with pytest.raises(ValueError, match="vocab"):
        MQARConfig(vocab=8, seq_len=32, pairs=4)


def test_training_moves_the_loss_down_and_reports_progress() -> None:
    seen: list[tuple[int, float, float]] = []
    r = train_mqar("softmax", TINY, seed=0, log_every=20, progress=lambda *p: seen.append(p))
    assert r.status == "ok" and r.causal and r.steps_done == TINY.steps
    assert [s for s, _, _ in seen] == [20, 40, 60, 80]
    assert seen[-1][1] < seen[0][1] < math.log(TINY.vocab) + 1
    assert 0.0 <= r.accuracy <= 1.0
    d = r.to_dict()
    assert d["status"] == "ok" and d["config"]["pairs"] == 2 and d["label"] == "softmax"


def test_training_is_deterministic_given_the_seed() -> None:
    config = MQARConfig(**{**TINY.to_dict(), "steps": 15})
    a, b = train_mqar("softmax", config, seed=1), train_mqar("softmax", config, seed=1)
    assert a.final_loss == b.final_loss and a.accuracy == b.accuracy
    assert train_mqar("softmax", config, seed=2).final_loss != a.final_loss


def test_a_run_whose_loss_explodes_is_diverged_not_zero() -> None:
    r = train_mqar("softmax", MQARConfig(**{**TINY.to_dict(), "lr": 1e6, "warmup": 1}), seed=0)
    assert r.status == "diverged" and r.accuracy is None
    assert r.steps_done < TINY.steps and not math.isfinite(r.final_loss)
    record = r.to_dict()
    json.dumps(record, allow_nan=False)  # a quality.jsonl line: the NaN loss becomes text
    assert record["final_loss"] in ("nan", "inf", "-inf")


def test_a_variant_without_causal_runs_non_causal() -> None:
    r = train_mqar("fastformer", MQARConfig(**{**TINY.to_dict(), "steps": 5}), seed=0)
    assert r.status == "ok" and r.causal is False


def test_a_bad_parameter_is_an_error_status() -> None:
    r = train_mqar("local", TINY, params={"window": 0})
    assert r.status == "error" and "window" in r.error and r.accuracy is None

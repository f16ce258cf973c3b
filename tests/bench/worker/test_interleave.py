"""A unit's cases measured together, sampled in turns (attnbench.bench.worker.interleave):
the turns and their stopping rule on fake samplers, the unit's seed, and a unit
measured in this process."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from attnbench.bench.records import finished_record
from attnbench.bench.worker.interleave import sample_in_turns, settled, unit_seed
from attnbench.bench.worker.messages import Meta, PassResult
from attnbench.bench.worker.process import run_unit_in_process
from attnbench.model import TimingSettings
from tests.helpers import unit_of

pytestmark = pytest.mark.usefixtures("faulty_variants")

# ---- the turns, on fake samplers ------------------------------------------------------------------


def recorder(calls: list, values: dict[int, list[float]]):
    """Samplers that note each call and return their next value (the last one repeats)."""
    def make(i: int):
        def sample() -> float:
            calls.append(i)
            seen = sum(1 for c in calls if c == i)
            return values[i][min(seen, len(values[i])) - 1]
        return sample
    return {i: make(i) for i in values}


def test_every_turn_samples_every_case_once_in_a_seeded_order():
    settings = TimingSettings(warmup=0, min_reps=5, max_reps=5)
    orders = []
    for _ in range(2):
        calls: list[int] = []
        got = sample_in_turns(recorder(calls, {0: [1.0], 1: [2.0], 2: [3.0]}), dict.fromkeys(range(3), settings),
                              random.Random(7), lambda i: None, lambda i, e: None)
        assert {i: len(v) for i, v in got.items()} == {0: 5, 1: 5, 2: 5}
        turns = [calls[k:k + 3] for k in range(0, 15, 3)]
        assert all(sorted(t) == [0, 1, 2] for t in turns)
        orders.append(calls)
    assert orders[0] == orders[1]  # the same seed, the same order
    assert len({tuple(t) for t in (orders[0][k:k + 3] for k in range(0, 15, 3))}) > 1  # shuffled per turn


def test_every_case_takes_turns_until_the_slowest_to_settle_is_settled():
    steady = [10.0]  # IQR 0: settled at min_reps
    noisy = [10.0, 20.0, 10.0, 20.0, 10.0, 20.0, 10.0, 20.0]  # never under the IQR target
    settings = TimingSettings(warmup=0, min_reps=3, max_reps=6, target_rel_iqr=0.05, min_time_s=1e9)
    calls: list[int] = []
    got = sample_in_turns(recorder(calls, {0: steady, 1: noisy}), {0: settings, 1: settings},
                          random.Random(0), lambda i: None, lambda i, e: None)
    assert len(got[0]) == len(got[1]) == 6  # the steady one keeps pace with the noisy one, up to max_reps
    calls.clear()
    got = sample_in_turns(recorder(calls, {0: steady, 1: steady}), {0: settings, 1: settings},
                          random.Random(0), lambda i: None, lambda i, e: None)
    assert len(got[0]) == len(got[1]) == 3  # both settled at min_reps
    assert settled([5.0, 5.0, 5.0], settings) and not settled([5.0, 5.0], settings)
    assert settled([600.0, 700.0, 200.0], replace(settings, min_time_s=1.5))  # 1.5 s in its samples


def test_warm_up_runs_first_and_a_case_that_raises_leaves_the_turns():
    calls: list[int] = []
    samplers = recorder(calls, {0: [1.0], 1: [1.0]})

    def broken() -> float:
        calls.append(2)
        raise ValueError("broken")

    samplers[2] = broken
    failures, at = [], []
    settings = TimingSettings(warmup=2, min_reps=3, max_reps=3)
    got = sample_in_turns(samplers, dict.fromkeys(range(3), settings), random.Random(1), at.append,
                          lambda i, exc: failures.append((i, str(exc))))
    assert calls[:5] == [0, 0, 1, 1, 2]  # warm-up, case by case; the broken one fails there
    assert failures == [(2, "broken")] and got[2] == [] and len(got[0]) == len(got[1]) == 3
    assert at == calls  # the caller always knows which case is at work


def test_unit_seed_depends_on_the_cases_and_the_round_not_their_order():
    cases = unit_of("[softmax, fastformer]", rounds=2)
    assert unit_seed(cases[:2]) == unit_seed(cases[:2][::-1])
    assert unit_seed(cases[:2]) != unit_seed(cases[2:])


# ---- a unit in this process -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_unit_in_process_reports_every_case_and_pass_with_paired_samples():
    cases = unit_of("[softmax, fastformer, {name: linformer, params: {k: 16}}]", rounds=2)
    for visit in (cases[:3], cases[3:]):
        outcomes = run_unit_in_process(visit)
        assert [o.case for o in outcomes] == list(visit)
        for outcome in outcomes:
            kinds = [type(m) for m in outcome.messages]
            assert kinds == [Meta, PassResult, PassResult]
            record = finished_record(outcome)
            assert record["status"] == "ok" and [p["pass"] for p in record["passes"]] == ["forward", "backward"]
            assert ("peak_mem_mib" in record["passes"][0]) == (visit[0].round == 0)  # memory on the first visit
            assert outcome.wall_s > 0
        for k in range(2):  # every case sampled in the same turns, which the pass says
            assert len({len(o.messages[1 + k].samples_ms) for o in outcomes}) == 1
            tokens = {o.messages[1 + k].turns for o in outcomes}
            assert len(tokens) == 1 and None not in tokens
            assert finished_record(outcomes[0])["passes"][k]["turns"] in tokens
        tokens_of_visit = {o.messages[1].turns for o in outcomes}
        assert tokens_of_visit != getattr(test_a_unit_in_process_reports_every_case_and_pass_with_paired_samples,
                                          "last", None)  # each visit of a unit has its own
        test_a_unit_in_process_reports_every_case_and_pass_with_paired_samples.last = tokens_of_visit


@pytest.mark.slow
def test_a_failing_case_is_reported_alone_and_the_others_measured():
    visit = unit_of("[softmax, faulty-raise, faulty-oom, fastformer]")
    got = {o.case.label: finished_record(o) for o in run_unit_in_process(visit)}
    assert got["faulty-raise"]["status"] == "error" and "raised on purpose" in got["faulty-raise"]["error"]
    assert got["faulty-oom"]["status"] == "oom"
    assert got["softmax"]["status"] == got["fastformer"]["status"] == "ok"


@pytest.mark.slow
def test_graphs_that_do_not_fit_together_are_timed_alone():
    # Round 1 has no memory run, and the backward pass builds each case's
    # graph once (its only forward call): the faulty layer's first call builds
    # its graph beside softmax's, runs out of memory there, then works alone.
    visit = [replace(c, round=1) for c in unit_of("[softmax, {name: faulty-oom-once, params: {call: 1}}]",
                                                  passes="[backward]")]
    got = {o.case.label: finished_record(o) for o in run_unit_in_process(visit)}
    assert got["faulty-oom-once"]["status"] == "ok" and got["faulty-oom-once"]["passes"][0]["samples_ms"]
    assert got["softmax"]["status"] == "ok" and got["softmax"]["passes"][0]["samples_ms"]
    assert "turns" not in got["softmax"]["passes"][0]  # timed alone: not paired turn by turn

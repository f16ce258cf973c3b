"""attnbench.store.visits: visit records merged into case records, paired speed-ups
with intervals from them, and the visit-level comparison of two runs."""

import math

import numpy as np
import pytest

from attnbench.analysis.baseline import paired_table
from attnbench.analysis.two_runs import compare_run_visits
from attnbench.store.visits import merge_visits, round_spread, visit_medians
from tests.test_compare_runs import record


def visit(label: str, n: int, rnd: int | None, passes: dict, heads: int = 2, mem: float | None = 1.0) -> dict:
    """A visit record; a pass given as a string failed with that status."""
    return record(label, n, passes, heads, rnd, mem)


def test_visits_merge_into_one_case_record_with_rounds():
    records = [visit("softmax", 64, 0, {"forward": [1.0, 1.1]}, mem=4.0),
               visit("linear", 64, 0, {"forward": [0.5]}),
               visit("softmax", 64, 1, {"forward": [2.0, 2.2]}),
               visit("softmax", 64, 2, {"forward": "timeout"}),
               visit("softmax", 64, 1, {"forward": [1.2, 1.3]})]  # a resumed run re-ran round 1: it wins
    merged = {r["case"]["label"]: r for r in merge_visits(records)}
    soft = merged["softmax"]
    assert soft["rounds"] == [0, 1, 2] and soft["status"] == "timeout"
    p = soft["passes"][0]
    assert p["round_ids"] == [0, 1, 2] and p["rounds_ms"] == [[1.0, 1.1], [1.2, 1.3], []]
    assert p["samples_ms"] == [1.0, 1.1, 1.2, 1.3] and p["status"] == "timeout" and p["peak_mem_mib"] == 4.0
    assert visit_medians(p) == pytest.approx([1.05, 1.25])
    assert round_spread(p) == pytest.approx(np.std(np.log([1.05, 1.25]), ddof=1))
    assert merged["linear"]["rounds"] == [0] and round_spread(merged["linear"]["passes"][0]) is None
    # a run from before rounds: one visit, round 0
    old = merge_visits([visit("softmax", 64, None, {"forward": [1.0, 2.0, 3.0]})])[0]
    assert old["rounds"] == [0] and old["passes"][0]["rounds_ms"] == [[1.0, 2.0, 3.0]]


def _run(rng, rounds, slow=1.0, drift=None):
    """softmax and linear at four N, forward only; per-round drift shared by both."""
    drift = drift if drift is not None else np.exp(rng.normal(0, 0.05, rounds))
    out = []
    for r in range(rounds):
        for n in (64, 128, 256, 512):
            for label, base in (("softmax", n / 16), ("linear", n / 64 * slow)):
                samples = list(base * drift[r] * np.exp(rng.normal(0, 0.01, 5)))
                out.append(visit(label, n, r, {"forward": samples}, mem=4.0 * n if label == "softmax" else n))
    return merge_visits(out)


def test_paired_speed_ups_recover_the_truth_with_intervals():
    rng = np.random.default_rng(0)
    table = paired_table(_run(rng, 5), "softmax").set_index(["label", "seq_len"])
    for n in (64, 128, 256, 512):
        row = table.loc[("linear", n)]
        assert row["speedup"] == pytest.approx(4.0, rel=0.02)
        assert row["speedup_low"] <= 4.0 <= row["speedup_high"] and row["speedup_method"] == "t-rounds"
        assert row["rounds"] == 5 and row["mem_ratio"] == pytest.approx(0.25)
        assert row["mem_ratio_low"] == row["mem_ratio_high"]
        base = table.loc[("softmax", n)]
        assert base["speedup"] == 1.0 and base["speedup_method"] == "exact"


def test_speed_ups_pair_turn_by_turn_only_visits_that_took_the_same_turns():
    """Two rounds with the machine's speed moving between turns: where both
    visits carry the same turns token the speed-up is exact; a visit from
    another unit (another token, or none: a run made before tokens, or timed
    alone) falls back to the ratio of medians."""
    moments = [1.0, 1.1, 1.0, 2.0, 1.9]  # the variant left after three turns, before the slow ones
    base, fast = [4.0 * m for m in moments], moments[:3]

    def run(tokens: tuple) -> list[dict]:
        out = []
        for rnd in range(2):
            for label, samples, token in (("softmax", base, tokens[0]), ("linear", fast, tokens[1])):
                rec = visit(label, 64, rnd, {"forward": samples})
                if token is not None:
                    rec["passes"][0]["turns"] = f"{token}{rnd}"
                out.append(rec)
        return merge_visits(out)

    same = run(("u", "u"))
    assert same[0]["passes"][0]["rounds_turns"] == ["u0", "u1"]
    assert paired_table(same, "softmax").set_index("label").loc["linear", "speedup"] == pytest.approx(4.0)
    medians = float(np.median(base) / np.median(fast))
    for tokens in (("u", "v"), (None, None), ("u", None)):
        table = paired_table(run(tokens), "softmax").set_index("label")
        assert table.loc["linear", "speedup"] == pytest.approx(medians), tokens
    assert medians != pytest.approx(4.0, rel=0.05)


def test_comparing_runs_visit_by_visit():
    rng = np.random.default_rng(1)
    a, same, slow = _run(rng, 5), _run(rng, 5), _run(rng, 5, slow=1.3)
    rows, shift = compare_run_visits(a, same)
    assert len(rows) == 8 and (rows["mark"] == "~").all() and (rows["n_a"] == 5).all()
    assert shift is None  # 8 cases: too few to tell the machine's drift from a change
    rows, _ = compare_run_visits(a, slow)
    marks = rows.set_index("label")["mark"]
    assert (marks["linear"] == "+").all() and (marks["softmax"] == "~").all()
    by_label = rows.set_index(["label", "seq_len"])["ratio"]
    assert (by_label["linear"] / by_label["softmax"]).to_numpy() == pytest.approx(1.3, rel=0.02)


def test_one_round_runs_get_no_verdict_and_failures_are_x():
    one_a = merge_visits([visit("softmax", 64, None, {"forward": [1.0, 1.0, 1.1]}),
                          visit("linear", 64, None, {"forward": [1.0]})])
    one_b = merge_visits([visit("softmax", 64, None, {"forward": [2.0, 2.1, 2.0]}),
                          visit("linear", 64, None, {"forward": "oom"})])
    rows, _ = compare_run_visits(one_a, one_b)
    rows = rows.set_index("label")
    assert rows.loc["softmax", "mark"] == "?" and rows.loc["softmax", "verdict"] == "too few rounds"
    assert rows.loc["softmax", "ratio"] == pytest.approx(2.0, rel=0.05)
    assert rows.loc["linear", "mark"] == "x" and rows.loc["linear", "status_b"] == "oom"
    assert math.isnan(rows.loc["linear", "ratio"])

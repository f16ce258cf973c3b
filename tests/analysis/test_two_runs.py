"""Two runs compared visit by visit (attnbench.analysis.two_runs): asv-style marks,
geometric means per variant; synthetic A/A runs report no change, a 2x slowdown
is found, runs with one round get no verdict. (The repeatability of real runs is
measured by benchmarks/repeatability.py, not here: no timed assertions in unit tests.)"""

import math

import numpy as np
import pytest

from attnbench.analysis.two_runs import compare_run_visits, compare_summary, regressions
from attnbench.store.visits import merge_visits
from tests.helpers import ROUNDS, compare_rows, merged, record, two_variant_run, visits


def test_compare_runs_marks_failures_and_missing_cases_with_x():
    rng = np.random.default_rng(1)
    a = [*visits(rng, "softmax", 64, {"forward": 1.0, "forward_backward": 3.0}),
         *visits(rng, "linear", 64, {"forward": 1.0, "forward_backward": 3.0}),
         *visits(rng, "gone", 64, {"forward": 1.0})]
    b = [*visits(rng, "softmax", 64, {"forward": 2.0, "forward_backward": 3.0}),
         *visits(rng, "linear", 64, {"forward": "oom", "forward_backward": 3.0}),
         *visits(rng, "new", 64, {"forward": 1.0})]
    c = compare_rows(merged(a), merged(b)).set_index(["label", "pass"])
    assert c.loc[("softmax", "forward"), "mark"] == "+"
    assert c.loc[("softmax", "forward"), "ratio"] == pytest.approx(2.0, rel=0.1)
    assert c.loc[("softmax", "forward"), "n_a"] == ROUNDS
    assert c.loc[("softmax", "forward_backward"), "mark"] == "~"
    assert c.loc[("linear", "forward"), "mark"] == "x" and c.loc[("linear", "forward"), "status_b"] == "oom"
    assert not c.loc[("linear", "forward"), "significant"]
    assert c.loc[("gone", "forward"), "mark"] == "x" and c.loc[("gone", "forward"), "status_b"] == "missing"
    assert c.loc[("new", "forward"), "mark"] == "x" and c.loc[("new", "forward"), "status_a"] == "missing"
    summary = compare_summary(c.reset_index()).set_index(["label", "pass"])
    assert summary.loc[("linear", "forward"), "failed"] == 1
    assert np.isnan(summary.loc[("linear", "forward"), "geomean_ratio"])
    assert summary.loc[("softmax", "forward"), "slower"] == 1


def test_geometric_mean_per_variant():
    a = [record("v", n, {"forward": [1.0, 1.0, 1.0]}, rnd=r) for n in (64, 128) for r in range(2)]
    b = [record("v", 64, {"forward": [2.0, 2.0, 2.0]}, rnd=r) for r in range(2)] + \
        [record("v", 128, {"forward": [0.5, 0.5, 0.5]}, rnd=r) for r in range(2)]
    summary = compare_summary(compare_rows(merged(a), merged(b)))
    assert summary["geomean_ratio"].iloc[0] == pytest.approx(1.0)  # sqrt(2 · 0.5)


def _suite_run(rng, medians, sigma, slow=None):
    return merged([v for (label, n), m in medians.items()
                   for v in visits(rng, label, n, {p: m * (3 if p == "forward_backward" else 1)
                                                   * (slow if slow and label == "linear" else 1)
                                                   for p in ("forward", "forward_backward")}, sigma)])


def test_synthetic_a_a_runs_report_no_change_in_95_percent_of_cases():
    rng = np.random.default_rng(2024)
    medians = {(label, n): float(rng.uniform(0.5, 50)) for label in ("softmax", "linear", "local", "performer")
               for n in (128, 256, 512, 1024, 2048)}
    flagged = total = 0
    for sigma in (0.01, 0.03, 0.06):  # spread between visits, from quiet to noisy
        for _ in range(3):
            c = compare_rows(_suite_run(rng, medians, sigma), _suite_run(rng, medians, sigma))
            flagged += int(c["significant"].sum())
            total += len(c)
            assert (c["mark"] != "x").all() and (c["mark"] != "?").all()
    assert total == 9 * 40
    assert flagged <= 0.05 * total, f"{flagged} of {total} A/A cases flagged"


def test_a_real_2x_slowdown_is_found():
    rng = np.random.default_rng(7)
    medians = {(v, n): n / 64 for v in ("softmax", "linear") for n in (64, 128)}
    c = compare_rows(_suite_run(rng, medians, 0.05), _suite_run(rng, medians, 0.05, slow=2.0))
    c = c.set_index(["label", "seq_len"])
    assert (c.loc["linear", "mark"] == "+").all() and (c.loc["softmax", "mark"] == "~").all()
    assert len(regressions(c.reset_index(), 1.5)) == 4 and len(regressions(c.reset_index(), 3.0)) == 0


def test_runs_without_rounds_get_no_verdict():
    one = [record("softmax", 64, {"forward": [1.0, 1.1, 0.9]})]
    two = [record("softmax", 64, {"forward": [2.0, 2.1, 1.9]})]
    c = compare_rows(merged(one), merged(two))
    assert c["mark"].tolist() == ["?"] and c["verdict"].tolist() == ["too few rounds"]
    assert c["ratio"].iloc[0] == pytest.approx(2.0) and not c["significant"].iloc[0]


def test_comparing_runs_visit_by_visit():
    rng = np.random.default_rng(1)
    a, same, slow = two_variant_run(rng, 5), two_variant_run(rng, 5), two_variant_run(rng, 5, slow=1.3)
    rows, shift = compare_run_visits(a, same)
    assert len(rows) == 8 and (rows["mark"] == "~").all() and (rows["n_a"] == 5).all()
    assert shift is None  # 8 cases: too few to tell the machine's drift from a change
    rows, _ = compare_run_visits(a, slow)
    marks = rows.set_index("label")["mark"]
    assert (marks["linear"] == "+").all() and (marks["softmax"] == "~").all()
    by_label = rows.set_index(["label", "seq_len"])["ratio"]
    assert (by_label["linear"] / by_label["softmax"]).to_numpy() == pytest.approx(1.3, rel=0.02)


def test_one_round_runs_get_no_verdict_and_failures_are_x():
    one_a = merge_visits([record("softmax", 64, {"forward": [1.0, 1.0, 1.1]}),
                          record("linear", 64, {"forward": [1.0]})])
    one_b = merge_visits([record("softmax", 64, {"forward": [2.0, 2.1, 2.0]}),
                          record("linear", 64, {"forward": "oom"})])
    rows, _ = compare_run_visits(one_a, one_b)
    rows = rows.set_index("label")
    assert rows.loc["softmax", "mark"] == "?" and rows.loc["softmax", "verdict"] == "too few rounds"
    assert rows.loc["softmax", "ratio"] == pytest.approx(2.0, rel=0.05)
    assert rows.loc["linear", "mark"] == "x" and rows.loc["linear", "status_b"] == "oom"
    assert math.isnan(rows.loc["linear", "ratio"])


# --- what differs between the suites, and the gate as a value --------------------------------

def test_what_differs_between_two_suites_is_said_key_by_key():
    from attnbench.analysis.two_runs import suite_differences

    a = {"suite_name": "quick", "suite": {"defaults": {"dim": 256}, "timing": {"rounds": 5},
                                          "variants": ["softmax", {"name": "linformer", "params": {"k": 128}}]}}
    b = {"suite_name": "quick", "allocator": "default",
         "suite": {"defaults": {"dim": 256}, "timing": {"rounds": 3},
                   "variants": ["softmax", {"name": "linformer", "params": {"k": 384}}, "sdpa"]}}
    assert suite_differences(a, b) == ["timing.allocator steady → default", "timing.rounds 5 → 3",
                                       "linformer.params.k 128 → 384", "sdpa: only in B"]
    assert suite_differences(a, a) == []
    assert suite_differences(a, {**a, "suite_name": "overview"})[0] == "suite quick → overview"


def test_the_gate_is_a_value_the_cli_only_prints():
    from attnbench.analysis.two_runs import compare_two_runs, gate

    rng = np.random.default_rng(5)
    a = merged([*visits(rng, "softmax", 64, {"forward": 1.0}), *visits(rng, "linear", 64, {"forward": 1.0})])
    slower = merged([*visits(rng, "softmax", 64, {"forward": 1.0}), *visits(rng, "linear", 64, {"forward": 2.0})])
    lost = merged(visits(rng, "softmax", 64, {"forward": 1.0}))
    assert not gate(compare_two_runs(a, a), 1.10).failed
    verdict = gate(compare_two_runs(a, slower), 1.10)
    assert verdict.failed and list(verdict.regressions["label"]) == ["linear"] and verdict.count == 1
    verdict = gate(compare_two_runs(a, lost), 1.10)
    assert verdict.failed and len(verdict.lost) == 1 and verdict.count == 0

"""benchmarks/timer_agreement.py's pure helpers: the order of the timers, the
figures of a case from its round medians, the verdict, the selection of cases
and what it writes."""

import csv
import importlib.util
import json
import math

import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("timer_agreement", ROOT / "benchmarks" / "timer_agreement.py")
ta = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ta)


def test_the_timers_alternate_which_goes_first():
    assert [ta.round_order(r) for r in range(4)] == [("attnbench", "timer"), ("timer", "attnbench")] * 2


def test_log_spread_is_the_std_of_the_logs():
    assert ta.log_spread([2.0]) is None
    assert ta.log_spread([1.0, 1.0, 1.0]) == 0.0
    assert ta.log_spread([1.0, math.e]) == pytest.approx(math.sqrt(0.5))


def test_summarize_takes_the_median_over_rounds_and_pairs_the_rounds():
    got = ta.summarize([10.0, 10.5, 30.0], [10.0, 10.0, 10.0])
    assert got["attnbench_ms"] == 10.5 and got["timer_ms"] == 10.0  # one disturbed round moves neither
    assert got["ratio"] == pytest.approx(1.05)
    assert (got["ratio_lo"], got["ratio_hi"]) == (1.0, 3.0)
    assert got["timer_spread"] == 0.0 and got["attnbench_spread"] > 0.05
    assert got["rounds"] == 3 and got["attnbench_rounds_ms"] == [10.0, 10.5, 30.0]
    assert got["verdict"] == "agree"


def test_the_ratio_is_paired_within_rounds():
    """A machine twice as slow in one round slows both timers of that round: the paired
    ratio sees no difference, where the ratio of the medians sees 2."""
    got = ta.summarize([10.0, 20.0, 20.0], [10.0, 10.0, 20.0])  # round 2: only the Timer was lucky
    assert got["ratio"] == pytest.approx(1.0)  # per round 1.0, 2.0, 1.0
    assert got["attnbench_ms"] / got["timer_ms"] == pytest.approx(2.0)
    assert ta.summarize([10.0, 20.0, 40.0], [10.0, 20.0, 40.0])["ratio"] == pytest.approx(1.0)


def test_summarize_of_unpaired_rounds_has_no_ratio_range():
    got = ta.summarize([10.0], [9.0, 9.5, 10.0])
    assert got["ratio_lo"] is None and got["attnbench_spread"] is None


@pytest.mark.parametrize(("ratio", "spreads", "expected"), [
    (1.09, [0.01, 0.02], "agree"),
    (0.91, [None, None], "agree"),
    (1.2, [0.01, 0.02], "DISAGREE"),
    (0.8, [None, 0.02], "DISAGREE"),
    (1.2, [0.01, 0.08], "DISAGREE (noisy)"),
])
def test_verdict(ratio, spreads, expected):
    assert ta.verdict(ratio, spreads) == expected


@pytest.mark.parametrize(("faults", "apart"), [
    ([3314.0, 2289.0], True),  # softmax N=1024 H=4 under glibc's default malloc, measured
    ([49155.0, 49155.0], False),
    ([0.0, 1.5], False),  # a stray fault or two is nothing
    ([9.0, 0.0], False),  # nor the first visit's growth spread over a small layer's calls
    ([1000.0, 905.0], False),
    ([None, 10.0], False),
])
def test_faults_apart(faults, apart):
    assert ta.faults_apart(faults) is apart


def test_a_disagreement_names_the_page_faults():
    assert ta.verdict(1.15, [0.01, 0.01], faults=[3314.0, 2289.0]) == "DISAGREE (page faults differ)"
    assert ta.verdict(1.15, [0.2, 0.01], faults=[3314.0, 2289.0]) == "DISAGREE (noisy, page faults differ)"
    assert ta.verdict(1.05, [0.2, 0.01], faults=[3314.0, 2289.0]) == "agree"
    row = ta.summarize([1.2, 1.2], [1.0, 1.0], faults=[3314.0, 2289.0])
    assert row["attnbench_faults"] == 3314.0 and row["verdict"] == "DISAGREE (page faults differ)"


def _spec_of(label, n, heads, **over):
    case = {"label": label, "seq_len": n, "heads": heads, "dim": 256, "batch": 1, "dtype": "float32",
            "causal": False, **over}
    return {"name": ta.case_name(case), "case_id": f"{label}|N={n}|H={heads}|dim={case['dim']}", "case": case}


def test_case_name_says_what_differs_from_the_quick_suite():
    assert _spec_of("softmax", 1024, 8)["name"] == "softmax N=1024 H=8"
    assert _spec_of("sdpa", 512, 4, dim=512, causal=True)["name"] == "sdpa N=512 H=4 dim=512 causal"


def test_select_by_name_or_case_id_then_limit():
    cases = [_spec_of(v, n, 4) for v in ("softmax", "sdpa") for n in (256, 512)]
    assert [c["name"] for c in ta.select(cases, "^softmax")] == ["softmax N=256 H=4", "softmax N=512 H=4"]
    assert len(ta.select(cases, "dim=256")) == 4
    assert [c["name"] for c in ta.select(cases, "N=512", limit=1)] == ["softmax N=512 H=4"]
    assert ta.select(cases) == cases


def _rows():
    rows = [{"case": "softmax N=256 H=4", "allocator": "steady", "threads": 2,
             **ta.summarize([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])},
            {"case": "sdpa N=256 H=4", "allocator": "steady", "threads": 2,
             **ta.summarize([1.3, 1.3, 1.3], [1.0, 1.0, 1.0], faults=[12.0, 11.5])},
            {"case": "sdpa N=256 H=4", "allocator": "default", "error": "boom"}]
    return rows


def test_table_and_summary():
    rows = _rows()
    table = ta.table_lines(rows)
    assert len(table) == 2 + len(rows)
    assert "| 1.300 | 1.30–1.30 | 0.0% | 0.0% | 12 / 12 | DISAGREE |" in table[3]
    assert "| – / – | agree |" in table[2]
    assert "error: boom" in table[4]
    (steady,) = ta.summary_lines(rows)  # the allocator whose cases all failed has no line
    assert steady.startswith("steady: worst +30.0% (sdpa N=256 H=4)") and "1 of 2 cases beyond 10%" in steady


def test_write_out_csv_and_json(tmp_path):
    rows = _rows()
    ta.write_out(tmp_path / "a.csv", rows, {"rounds": 3})
    read = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert [r["verdict"] for r in read] == ["agree", "DISAGREE", ""] and read[2]["error"] == "boom"
    ta.write_out(tmp_path / "a.json", rows, {"rounds": 3})
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["rounds"] == 3 and data["cases"][1]["timer_rounds_ms"] == [1.0, 1.0, 1.0]


def test_the_suite_cases_are_its_cpu_forward_cases():
    cases = ta.suite_cases(ROOT / "suites" / "quick.yaml")
    assert len(cases) == 32 and all(c["case"]["passes"] == ["forward"] for c in cases)
    assert cases[0]["name"] == "softmax N=256 H=4"


def test_only_a_noisy_disagreement_is_measured_again():
    noisy = ta.summarize([1.3, 1.0, 1.3], [1.0, 1.0, 1.0])
    assert noisy["verdict"] == "DISAGREE (noisy)" and ta.retry_wanted(noisy)
    assert not ta.retry_wanted(ta.summarize([1.3, 1.3, 1.3], [1.0, 1.0, 1.0]))  # steady: a real difference
    assert not ta.retry_wanted(ta.summarize([1.0, 1.0], [1.0, 1.0]))
    assert not ta.retry_wanted({**noisy, "retried": True})


def test_measured_again_the_rounds_join_and_the_verdict_is_on_all():
    first = {"attnbench": [1.3, 1.0, 1.3], "timer": [1.0, 1.0, 1.0], "faults": [10.0, 12.0], "threads": 2}
    again = {"attnbench": [1.0] * 6, "timer": [1.0] * 6, "faults": [14.0, None], "threads": 2}
    both = ta.merged(first, again)
    assert len(both["attnbench"]) == len(both["timer"]) == 9 and both["faults"] == [12.0, None]
    row = ta.summarize(both["attnbench"], both["timer"], faults=both["faults"])
    assert row["ratio"] == 1.0 and ta.agrees({**row, "verdict": row["verdict"] + " (measured again)"})
    lines = ta.summary_lines([{"case": "c", "allocator": "default", **row, "retried": True}])
    assert lines[0].endswith("0 of 1 cases beyond 10%; 1 measured again")

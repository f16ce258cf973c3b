"""``attnbench compare``: one run against a baseline, laid out like LRA; two runs
(RUN_B against RUN_A) visit by visit with asv-style marks, --fail-above exit
codes, a gate that compared nothing does not pass, a setting whose variants
all moved together; --json; a recorded real run against itself and against
its 2x slower copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.store.results import load_run
from tests.helpers import compare_rows, draw, merged, record, recorded_run, strict_json, visits, words, write_run

runner = CliRunner()


# --- one run: each variant against a baseline ---------------------------------------------

def test_compare_against_baseline_is_laid_out_like_lra(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), "--baseline", "softmax", "--pass", "forward"])
    assert result.exit_code == 0, result.output
    assert "(1.00x)" in result.stdout  # the baseline against itself
    assert "[95% interval] over this run's rounds" in " ".join(result.stdout.split())  # what the brackets are
    frame = load_run(tiny_run).frame()
    assert "steps/s" in result.stdout and set(frame["label"]) <= set(result.stdout.split())


def test_compare_with_an_unknown_baseline_is_exit_2(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), "--baseline", "nope"])
    assert result.exit_code == 2 and "not in this run" in result.output


def test_compare_json_has_speedup_and_memory_ratio_rows(json_run: Path):
    result = runner.invoke(app, ["compare", str(json_run), "--json", "--pass", "forward"])
    assert result.exit_code == 0, result.output
    payload = strict_json(result.stdout)
    assert payload["baseline"] == "softmax" and payload["passes"] == ["forward"]
    rows = {(r["label"], r["seq_len"]): r for r in payload["rows"]}
    assert len(rows) == 6
    for key in ("label", "heads", "seq_len", "pass", "median_ms", "speedup", "mem_ratio", "baseline_ms"):
        assert key in rows[("sdpa", 16)]
    assert rows[("softmax", 32)]["speedup"] == pytest.approx(1.0)
    sdpa = rows[("sdpa", 32)]  # paired by round: its geometric mean over rounds, within its 95% interval
    assert sdpa["speedup_low"] <= sdpa["speedup"] <= sdpa["speedup_high"]
    assert sdpa["speedup_method"] in ("t-rounds", "bootstrap-samples", "exact") and sdpa["rounds"] >= 1
    assert rows[("t-json-broken", 16)]["speedup"] is None
    both = strict_json(runner.invoke(app, ["compare", str(json_run), "--json", "--baseline", "sdpa"]).stdout)
    assert both["baseline"] == "sdpa" and set(both["passes"]) == {"forward", "backward"}


# --- two runs: a gate that compared nothing does not pass ---------------------------------

def _record(label: str, n: int, samples: list[float] | str) -> dict:
    return record(label, n, {"forward": samples})


SAMPLES = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98]


def test_a_gate_fails_when_cases_of_a_are_missing_from_b(tmp_path: Path):
    a = write_run(tmp_path / "a", [_record(v, n, SAMPLES) for v in ("softmax", "linear") for n in (64, 128, 256)])
    b = write_run(tmp_path / "b", [_record("softmax", 64, SAMPLES), _record("other", 64, SAMPLES)])
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.1"])
    assert result.exit_code == 1, result.output
    assert "missing" in words(result.output)


def test_a_gate_fails_when_a_case_of_a_failed_in_b(tmp_path: Path):
    a = write_run(tmp_path / "a", [_record("softmax", 64, SAMPLES), _record("softmax", 128, SAMPLES)])
    b = write_run(tmp_path / "b", [_record("softmax", 64, SAMPLES), _record("softmax", 128, "oom")])
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.1"])
    assert result.exit_code == 1, result.output
    assert "oom" in result.output


def test_comparing_a_run_with_itself_says_so(honest_run: Path):
    result = runner.invoke(app, ["compare", str(honest_run), str(honest_run)])
    assert "same run" in words(result.output)


def test_compare_pass_takes_the_short_names_and_refuses_unknown_ones(honest_run: Path):
    result = runner.invoke(app, ["compare", str(honest_run), "--pass", "fwd"])
    assert result.exit_code == 0 and "sdpa" in result.stdout, result.output
    result = runner.invoke(app, ["compare", str(honest_run), "--pass", "nope"])
    assert result.exit_code == 2 and "forward" in result.output


def test_compare_two_runs_refuses_a_baseline_it_would_ignore(honest_run: Path):
    result = runner.invoke(app, ["compare", str(honest_run), str(honest_run), "--baseline", "sdpa"])
    assert result.exit_code == 2 and "--baseline" in result.output


# --- two runs: marks, --fail-above, --json ------------------------------------------------

@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(3)
    base = {(v, n): n / 64 for v in ("softmax", "linear") for n in (64, 128)}

    def run(slow: float = 1.0) -> list[dict]:
        return [rec for (v, n), m in base.items()
                for rec in visits(rng, v, n, {"forward": m * (slow if v == "linear" else 1)})]

    return (write_run(tmp_path / "a", run()), write_run(tmp_path / "same", run()),
            write_run(tmp_path / "slow", run(2)))


def test_cli_marks_and_fail_above_exit_codes(runs):
    a, same, slow = runs
    result = runner.invoke(app, ["compare", str(a), str(same), "--fail-above", "1.05"])
    assert result.exit_code == 0, result.output
    assert "geomean" in result.stdout and "+" not in result.stdout.split("B/A")[1].split("per variant")[0]
    result = runner.invoke(app, ["compare", str(a), str(slow)])
    assert result.exit_code == 0, result.output  # no threshold: report only
    lines = [line for line in result.stdout.splitlines() if "linear" in line and "fwd" in line]
    assert len(lines) >= 2 and all("+" in line for line in lines[:2])
    result = runner.invoke(app, ["compare", str(a), str(slow), "--fail-above", "1.5"])
    assert result.exit_code == 1 and "regression" in result.output and "linear" in result.output
    result = runner.invoke(app, ["compare", str(a), str(slow), "--fail-above", "2.5"])
    assert result.exit_code == 0, result.output
    # B faster than A is never a regression
    result = runner.invoke(app, ["compare", str(slow), str(a), "--fail-above", "1.05"])
    assert result.exit_code == 0 and "-" in result.stdout


def test_cli_json_and_bad_usage(runs):
    a, _, slow = runs
    result = runner.invoke(app, ["compare", str(a), str(slow), "--json", "--fail-above", "1.5"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["regressions"] == 2 and {r["mark"] for r in payload["rows"]} == {"+", "~"}
    assert runner.invoke(app, ["compare", str(a), "--fail-above", "1.5"]).exit_code == 2
    assert runner.invoke(app, ["compare", str(a), str(slow), "--fail-above", "-1"]).exit_code == 2
    assert runner.invoke(app, ["compare", str(a), str(a.parent / "nope")]).exit_code == 2


def test_cli_a_case_failed_in_b_is_x_and_fails_the_gate(tmp_path: Path):
    # A gate must not pass on what it could not compare (issue 18): a case
    # measured in A that failed in B fails --fail-above; without the option it
    # is a warning naming the case.
    rng = np.random.default_rng(4)
    a = write_run(tmp_path / "a", visits(rng, "softmax", 64, {"forward": 1.0}))
    b = write_run(tmp_path / "b", visits(rng, "softmax", 64, {"forward": "oom"}))
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.1"])
    assert result.exit_code == 1 and "oom" in result.stdout and "softmax N=64" in result.output
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0 and "missing or failed in RUN_B" in result.output


def test_cli_a_case_new_in_b_does_not_fail_the_gate(tmp_path: Path):
    rng = np.random.default_rng(5)
    a = write_run(tmp_path / "a", [record("softmax", 64, {"forward": draw(rng, 1.0)})])
    b = write_run(tmp_path / "b", [record("softmax", 64, {"forward": draw(rng, 1.0)}),
                                   record("linear", 64, {"forward": draw(rng, 1.0)})])
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.5"])
    assert result.exit_code == 0, result.output


def test_cli_says_when_runs_have_too_few_rounds(tmp_path: Path):
    a = write_run(tmp_path / "a", [record("softmax", 64, {"forward": [1.0, 1.1]})])
    b = write_run(tmp_path / "b", [record("softmax", 64, {"forward": [3.0, 3.1]})])
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-above", "1.1"])
    assert result.exit_code == 0 and "too few rounds" in result.output and "timing.rounds" in result.output


def test_cli_reports_a_setting_whose_variants_all_moved_together(tmp_path: Path):
    # Four variants at four N (16 cases, enough for a common shift): in run B
    # every variant at N=256 takes 30% longer, as whole settings did between
    # A/A runs on the 2-core VM. Against its peers no variant changed; the
    # setting did, and compare says so instead of marking each case.
    rng = np.random.default_rng(8)
    labels, ns = ("softmax", "sdpa", "linear", "fast"), (64, 128, 256, 512)

    def run(slower_n: int | None) -> list[dict]:
        return [rec for v, label in enumerate(labels) for n in ns
                for rec in visits(rng, label, n, {"forward": (1 + v) * n / 64 * (1.3 if n == slower_n else 1.0)},
                                  sigma=0.01)]

    a, b = write_run(tmp_path / "a", run(None)), write_run(tmp_path / "b", run(256))
    result = runner.invoke(app, ["compare", str(a), str(b), "--json"])
    rows = json.loads(result.stdout)["rows"]
    moved = [r for r in rows if r["setting_moved"]]
    assert {r["seq_len"] for r in moved} == {256} and len(moved) == 4
    assert all(r["against"] == "peers" and not r["significant"] for r in moved)
    assert moved[0]["setting_shift"] == pytest.approx(1.3, rel=0.03)
    assert "moved together" in result.stderr and "N=256 H=2 forward: 4 variants, B/A 1.2" in result.stderr


def test_one_argument_form_still_compares_against_a_baseline(runs):
    a, _, _ = runs
    result = runner.invoke(app, ["compare", str(a), "--baseline", "softmax"])
    assert result.exit_code == 0 and "(1.00x)" in result.stdout


def test_a_real_run_against_itself_and_against_its_2x_slower_copy(tmp_path: Path):
    """A real run's records (recorded: tests/fixtures/runs/aa, two rounds of
    softmax, fastformer and linear) through compare: against itself all '~'. Then the
    run with each case's visits set to its middle visit (no spread between
    visits: a verdict that does not depend on this machine's load) against the
    same with every sample doubled (what a 2x slower kernel records): all '+',
    and --fail-above 1.5 exits 1."""
    import statistics

    records = load_run(recorded_run("aa", tmp_path)).visits
    assert {r["round"] for r in records} == {0, 1}
    c = compare_rows(merged(records), merged(records))
    assert len(c) == 6 and (c["mark"] == "~").all() and (c["ratio"] == 1.0).all() and (c["n_a"] == 2).all()
    steady = json.loads(json.dumps(records))
    middle = {}
    for r in records:
        for p in r["passes"]:
            middle.setdefault((r["case_id"], p["pass"]), []).extend(p["samples_ms"])
    for r in steady:
        for p in r["passes"]:
            p["samples_ms"] = [statistics.median(middle[(r["case_id"], p["pass"])])] * 3
    slow = json.loads(json.dumps(steady))
    for r in slow:
        for p in r["passes"]:
            p["samples_ms"] = [2 * x for x in p["samples_ms"]]
    a, slow_dir = write_run(tmp_path / "A", steady), write_run(tmp_path / "slow", slow)
    c = compare_rows(merged(steady), merged(slow))
    assert (c["mark"] == "+").all() and np.allclose(c["ratio"], 2.0), c[["label", "seq_len", "ratio", "low"]]
    assert runner.invoke(app, ["compare", str(a), str(slow_dir), "--fail-above", "1.5"]).exit_code == 1
    assert runner.invoke(app, ["compare", str(a), str(a), "--fail-above", "1.01"]).exit_code == 0


def test_runs_of_different_suites_say_what_differs_before_the_table(tmp_path):
    rng = np.random.default_rng(3)
    recs = merged([*visits(rng, "softmax", 64, {"forward": 1.0}), *visits(rng, "linformer", 64, {"forward": 1.0})])
    suite = {"defaults": {"dim": 32}, "variants": ["softmax", {"name": "linformer", "params": {"k": 128}}]}
    changed = {**suite, "variants": ["softmax", {"name": "linformer", "params": {"k": 384}}]}
    a = write_run(tmp_path / "a", recs, suite_name="t", suite=suite)
    b = write_run(tmp_path / "b", recs, suite_name="t", suite=changed)
    result = runner.invoke(app, ["compare", str(a), str(b)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "different suites" in result.stderr and "linformer.params.k 128 → 384" in result.stderr
    same = runner.invoke(app, ["compare", str(a), str(write_run(tmp_path / "c", recs, suite_name="t", suite=suite))])
    assert "different suites" not in same.stderr
    payload = json.loads(runner.invoke(app, ["compare", str(a), str(b), "--json"]).stdout)
    assert payload["suite_differences"] == ["linformer.params.k 128 → 384"]


# --- compare --html (the page itself: tests/report/test_html.py and test_html_browser.py) ---------

def test_compare_html_writes_the_page_and_keeps_the_gates_exit_code(tmp_path: Path):
    pytest.importorskip("vl_convert", reason="the html extra (vl-convert-python) is not installed")
    run_a = recorded_run("aa", tmp_path)
    slow = load_run(run_a).visits
    for r in slow:
        for p in r["passes"]:
            p["samples_ms"] = [2 * x for x in p["samples_ms"]]
    run_b = write_run(tmp_path / "slow", slow)
    page = tmp_path / "compare.html"
    result = runner.invoke(app, ["compare", str(run_a), str(run_b), "--fail-above", "1.5", "--html", str(page)])
    assert result.exit_code == 1 and f"wrote {page}" in result.stderr
    text = page.read_text(encoding="utf-8")
    assert "--fail-above 1.5: failed" in text and text.index('id="changed"') < text.index('id="cases"')


def test_compare_html_with_one_run_writes_its_report(tiny_run: Path, tmp_path: Path):
    pytest.importorskip("vl_convert", reason="the html extra (vl-convert-python) is not installed")
    page = tmp_path / "tiny.html"
    result = runner.invoke(app, ["compare", str(tiny_run), "--baseline", "sdpa", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "speed-up vs sdpa" in page.read_text(encoding="utf-8")


def test_compare_html_without_the_extra_is_refused_first(honest_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "vl_convert", None)
    result = runner.invoke(app, ["compare", str(honest_run), str(honest_run), "--html", str(tmp_path / "c.html")])
    assert result.exit_code == 2 and "pip install 'attnbench[html]'" in result.stderr and result.stdout == ""

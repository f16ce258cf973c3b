"""`attnbench compare RUN_A RUN_B`: the visit (one case in one round) as the
unit, asv-style marks, geometric means per variant, --fail-above exit codes;
synthetic A/A runs report no change, a real 2x slowdown is found, runs with one
round get no verdict. (The repeatability of real runs is measured by
benchmarks/repeatability.py, not here: no timed assertions in unit tests.)"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attnbench.analysis.two_runs import compare_run_visits, compare_summary, regressions
from attnbench.cli.app import app
from attnbench.store.results import load_run
from attnbench.store.visits import merge_visits

runner = CliRunner()


def record(label: str, n: int, passes: dict[str, list[float] | str], heads: int = 2,
           rnd: int | None = None, mem: float | None = 1.0) -> dict:
    """A visit record (``rnd`` None: a run from before rounds); a pass given as
    a string is a failure with that status. ``mem``: the peak memory, which
    a pass measures on its first visit only."""
    case = {"suite": "t", "variant": label, "label": label, "params": {}, "batch": 1, "seq_len": n, "heads": heads,
            "dim": 32, "dtype": "float32", "device": "cpu", "causal": False, "passes": list(passes),
            "compile": False}
    out = []
    for name, value in passes.items():
        if isinstance(value, str):
            out.append({"pass": name, "status": value, "error": value, "samples_ms": []})
        else:
            out.append({"pass": name, "status": "ok", "samples_ms": list(value),
                        "peak_mem_mib": mem if rnd in (0, None) else None})
    status = next((p["status"] for p in out if p["status"] != "ok"), "ok")
    rec = {"schema": 1, "case_id": f"{label}|N={n}|H={heads}|dim=32|B=1|float32|cpu|causal=0", "case": case,
           "passes": out, "status": status, "threads": 1}
    if rnd is not None:
        rec["round"] = rnd
    return rec


def write_run(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"schema": 1, "run_id": path.name, "baseline": "softmax"}))
    (path / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


ROUNDS = 4


def visits(rng, label: str, n: int, passes: dict[str, float | str], sigma: float = 0.03, rounds: int = ROUNDS,
           samples: int = 5) -> list[dict]:
    """``rounds`` visits of one case: per pass a median (each visit drifts by
    ``sigma`` around it) or a failure status."""
    out = []
    for r in range(rounds):
        drift = float(np.exp(rng.normal(0, sigma)))
        out.append(record(label, n, {p: v if isinstance(v, str) else draw(rng, v * drift, 0.01, samples)
                                     for p, v in passes.items()}, rnd=r))
    return out


def merged(records: list[dict]) -> list[dict]:
    return merge_visits(records)


def compare_rows(a, b):
    """The rows of ``compare_run_visits`` without the common shift."""
    return compare_run_visits(a, b)[0]


def draw(rng, median: float, sigma: float = 0.03, n: int = 12) -> list[float]:
    return [float(x) for x in median * np.exp(rng.normal(0.0, sigma, n))]


# --- whole runs ---------------------------------------------------------------------

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


# --- the command line ------------------------------------------------------------------

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


# --- real runs ------------------------------------------------------------------------

REAL = """\
name: aa
defaults: {batch: 1, dim: 32, passes: [forward]}
grid: {seq_lens: [64, 128], heads: [2]}
variants: [softmax, fastformer, linear]
timing: {rounds: 2, warmup: 1, min_time_s: 0.02, max_reps: 20, min_reps: 5, target_rel_iqr: 0.0}
"""


def _run_real(suite: Path, out: Path) -> list[dict]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second intra-op thread would wait at each barrier for a busy core
    try:
        result = runner.invoke(app, ["run", str(suite), "--out", str(out), "--in-process", "-q"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return load_run(next(out.iterdir())).visits


def test_a_real_run_against_itself_and_against_its_2x_slower_copy(tmp_path: Path):
    """A real run's records through compare: against itself all '~'. Then the
    run with each case's visits set to its middle visit (no spread between
    visits: a verdict that does not depend on this machine's load) against the
    same with every sample doubled (what a 2x slower kernel records): all '+',
    and --fail-above 1.5 exits 1."""
    import statistics

    suite = tmp_path / "aa.yaml"
    suite.write_text(REAL)
    records = _run_real(suite, tmp_path / "a")
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

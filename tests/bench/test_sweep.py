"""The sweep (attnbench.bench.sweep). On a fake executor (no torch work, fast and
exact): every case visited once per round in a shuffled order the run's seed
reproduces, one record per visit, resume in the middle of a round, calibration
and noise in run.json, the skip policy. Through worker processes, with variants
that fail on purpose (tests/fixtures/faulty_variants.py): every fault has its
status, dead workers are replaced and nothing is lost; interruption stops the
sweep. Every suite is tiny (dim 32, N 64/128, no warm-up, two samples) so that
the time goes to the faults themselves."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import psutil
import pytest
from typer.testing import CliRunner

from attnbench.bench.executors.base import Executor
from attnbench.bench.rundir import RunOptions
from attnbench.bench.sweep import plan_units, run_suite, setting_group
from attnbench.bench.worker.messages import CaseStarted, Failure, Outcome, PassResult
from attnbench.cli.app import app
from attnbench.model import Status
from attnbench.store.results import load_run
from attnbench.suite import load as suite_mod
from tests.helpers import (
    SLOW_SUITE,
    SPREAD_SUITE,
    SWEEP_TIMING,
    FakeExecutor,
    rounds_suite,
    signal_after,
    small_suite,
    write_suite,
)

pytestmark = pytest.mark.usefixtures("faulty_variants")


def test_every_case_is_visited_once_per_round_in_a_reproducible_shuffled_order():
    cases = rounds_suite().cases()
    units = plan_units(cases, rounds=4, seed=7)
    visits = [(c.case_id, c.round) for u in units for c in u.cases]
    assert Counter(visits) == Counter((c.case_id, r) for c in cases for r in range(4))
    assert all(c.round == u.round for u in units for c in u.cases)
    # a unit is one setting group: every variant at one N and heads, in one round
    for unit in units:
        assert len({setting_group(c) for c in unit.cases}) == 1 and len(unit.cases) == 3
    rounds = [[c.case_id for u in units if u.round == r for c in u.cases] for r in range(4)]
    assert len({tuple(r) for r in rounds}) == 4  # each round its own order
    # the first round runs smaller N first, so an OOM skips the larger N of its series
    first = [c.seq_len for u in units if u.round == 0 for c in u.cases]
    assert first == sorted(first)
    assert [(c.case_id, c.round) for u in plan_units(cases, 4, 7) for c in u.cases] == visits
    assert [(c.case_id, c.round) for u in plan_units(cases, 4, 8) for c in u.cases] != visits
    # one round: the suite's order, as before rounds existed
    assert [c.case_id for u in plan_units(cases, 1, 7) for c in u.cases] == [c.case_id for c in cases]


def test_a_run_records_one_line_per_visit_and_merges_them_per_case(tmp_path: Path):
    executor = FakeExecutor()
    summary = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    assert summary.exit_code == 0 and len(executor.ran) == 18 * 4 and executor.fresh_calls == 4
    lines = [json.loads(line) for line in (summary.run_dir / "cases.jsonl").read_text().splitlines()]
    assert Counter(line["round"] for line in lines) == {r: 18 for r in range(4)}
    run = load_run(summary.run_dir)
    assert len(run.records) == 18 and len(run.visits) == 72
    assert all(r["rounds"] == [0, 1, 2, 3] for r in run.records)
    assert [r["case_id"] for r in run.records] == [c.case_id for c in rounds_suite().cases()]  # the suite's order
    frame = run.frame()
    assert (frame["rounds"] == 4).all() and (frame["round_spread"] > 0).all() and len(frame) == 36
    assert (frame["peak_mem_mib"] == frame["seq_len"]).all()  # measured on the first visit
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert isinstance(meta["order_seed"], int) and meta["visits_done"] == meta["visits_total"] == 72
    # the run's seed reproduces its order
    planned = [(c.case_id, c.round) for u in plan_units(rounds_suite().cases(), 4, meta["order_seed"]) for c in u.cases]
    assert executor.ran == planned


def test_calibration_and_noise_go_into_run_json(tmp_path: Path):
    summary = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=FakeExecutor())
    meta = json.loads((summary.run_dir / "run.json").read_text())
    start, end = meta["calibration"]["start"], meta["calibration"]["end"]
    assert [c["device"] for c in start] == ["cpu"] and start[0]["dtype"] == "float32"
    # one calibration at the start, one between each two of the 4 rounds, one at the end: 65 ... 125 GFLOP/s
    assert start[0]["matmul_flops"] == pytest.approx(6.5e10) and end[0]["matmul_flops"] == pytest.approx(12.5e10)
    assert [c["matmul_flops"] for c in meta["calibration"]["rounds"]] == pytest.approx([8e10, 9.5e10, 11e10])
    assert any("matmul rate" in w and "+92%" in w for w in summary.warnings)  # 65 -> 125 GFLOP/s: drift
    noise = meta["noise"]
    assert {"wall_s", "other_cpu_s", "other_share", "load_average_start", "load_average_end"} <= set(noise)


def test_resume_in_the_middle_of_a_round_runs_only_the_missing_visits_in_the_planned_order(tmp_path: Path):
    first = FakeExecutor(stop_after=25)  # 18 visits a round: stops in round 2
    summary = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=first)
    assert summary.interrupted and summary.exit_code == 130 and len(first.ran) == 25
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["visits_done"] == 25
    second = FakeExecutor()
    resumed = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True),
                        executor=second)
    assert not resumed.interrupted and len(second.ran) == 72 - 25
    planned = [(c.case_id, c.round) for u in plan_units(rounds_suite().cases(), 4, meta["order_seed"]) for c in u.cases]
    assert first.ran + second.ran == planned
    run = load_run(summary.run_dir)
    assert len(run.visits) == 72 and all(r["rounds"] == [0, 1, 2, 3] for r in run.records)
    assert json.loads((summary.run_dir / "run.json").read_text())["calibration"]["start"][0]["matmul_flops"] == \
        pytest.approx(6.5e10)  # the run's first calibration stays


def test_a_failed_first_visit_is_not_repeated(tmp_path: Path):
    class Failing(FakeExecutor):
        def run(self, cases):
            for event in super().run(cases):
                if isinstance(event, Outcome) and event.case.label == "linear" and event.case.seq_len == 64:
                    event.status, event.error = "timeout", "too slow"
                yield event

    executor = Failing()
    summary = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    ran = Counter(case_id for case_id, _ in executor.ran)
    linear_64 = [k for k in ran if k.startswith("linear|N=64|")]
    assert len(linear_64) == 2 and all(ran[k] == 1 for k in linear_64)  # heads 2 and 4: first visit only
    records = {r["case_id"]: r for r in summary.records}
    assert all(records[k]["status"] == "timeout" for k in linear_64)
    assert summary.exit_code == 3


def test_an_oom_skips_the_larger_n_of_its_series_in_every_round(tmp_path: Path):
    class OutOfMemory(FakeExecutor):
        def run(self, cases):
            for event in super().run(cases):
                if isinstance(event, Outcome) and event.case.label == "softmax" and event.case.seq_len == 128:
                    event.status, event.error = "oom", "out of memory"
                yield event

    executor = OutOfMemory()
    summary = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    softmax = Counter(case_id.split("|")[1] for case_id, _ in executor.ran if case_id.startswith("softmax|"))
    assert softmax == {"N=64": 8, "N=128": 2}  # heads 2 and 4; N=128 once each, N=256 never
    statuses = {(r["case"]["seq_len"], r["case"]["heads"]): r["status"] for r in summary.records
                if r["case"]["label"] == "softmax"}
    assert statuses[(128, 2)] == "oom" and statuses[(256, 2)] == "skipped" and statuses[(64, 4)] == "ok"


def test_units_are_setting_groups_only_when_distributed():
    cases = suite_mod.parse(small_suite(**SPREAD_SUITE)).cases()
    assert [len(u.cases) for u in plan_units(cases)] == [1] * len(cases)
    groups = plan_units(cases, by_setting=True)
    assert [len(u.cases) for u in groups] == [3, 3, 3]
    assert all(len({c.seq_len for c in u.cases}) == 1 for u in groups)
    assert sorted(c.label for c in groups[0].cases) == ["fastformer", "linformer", "softmax"]
    assert [u.cases[0].seq_len for u in groups] == [32, 64, 96]  # the first round: smaller N first


# --- the executor seam -----------------------------------------------------------------

class ScriptedExecutor(Executor):
    """An executor that runs nothing: it reports each case as the script says
    (an out-of-memory at one N), so the sweep's own part can be watched."""

    def __init__(self, oom_at: int) -> None:
        self.oom_at = oom_at
        self.handed: list[list[int]] = []
        self.closed = None

    def run(self, cases):
        self.handed.append([c.seq_len for c in cases])
        for case in cases:
            yield CaseStarted(case)
            if case.seq_len == self.oom_at:
                messages = [Failure(status=Status.OOM, error="out of memory (scripted)")]
            else:
                messages = [PassResult(pass_name=p, samples_ms=[1.0, 1.1], peak_mem_mib=1.0, memory_measured=True)
                            for p in case.passes]
            yield Outcome(case=case, messages=messages, worker_pid=0, started=1.0, wall_s=0.5)

    def close(self, interrupted: bool = False) -> None:
        self.closed = interrupted


@pytest.mark.slow
def test_the_sweep_plans_units_skips_after_an_oom_and_records_what_the_executor_yields(tmp_path):
    suite = suite_mod.parse(small_suite("seam", grid={"seq_lens": [16, 32, 64, 128], "heads": [2]},
                                        timing=SWEEP_TIMING), "seam.yaml")
    executor = ScriptedExecutor(oom_at=32)
    assert [[c.seq_len for c in unit.cases] for unit in plan_units(suite.cases())] == [[16], [32], [64], [128]]
    summary = run_suite(suite, RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    # Each case visited once, in suite order; the skip policy kept N past the OOM from the executor.
    assert executor.handed == [[16], [32]] and executor.closed is False  # nothing left to run: nothing handed
    records = load_run(summary.run_dir).records
    assert [(r["case"]["seq_len"], r["status"]) for r in records] == [
        (16, "ok"), (32, "oom"), (64, "skipped"), (128, "skipped")]
    assert records[0]["wall_s"] == 0.5 and records[0]["passes"][0]["samples_ms"] == [1.0, 1.1]
    assert "N=32 of this series ran out of memory" in records[2]["error"]
    assert summary.exit_code == 3


FAULTS_SUITE = {
    "name": "faults", "defaults": {"dim": 32, "passes": ["forward", "backward"]},
    "variants": ["faulty-raise", "faulty-abort",
                 "softmax",  # right after two crashes: runs, in a new worker
                 {"name": "faulty-hang", "seq_lens": [64]},
                 {"name": "faulty-slow", "params": {"delay_s": 0.0}},  # right after a timeout: runs, in a new worker
                 "faulty-oom", {"name": "faulty-hog", "params": {"size_mib": 1024}},
                 {"name": "faulty-oomkill", "seq_lens": [64]}],
    "timing": SWEEP_TIMING, "limits": {"case_timeout_s": 4, "memory_limit_mib": 256}}


def by_label(records: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["case"]["label"], r["case"]["seq_len"]): r for r in records}


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    suite = suite_mod.load(write_suite(tmp / "faults.yaml", **FAULTS_SUITE))
    t0 = time.perf_counter()
    summary = run_suite(suite, RunOptions(out_dir=tmp / "results", quiet=True))
    return summary, time.perf_counter() - t0


@pytest.mark.slow
def test_each_fault_has_its_status(fault_run):
    summary, _ = fault_run
    got = {key: (r["status"], r["error"] or "") for key, r in by_label(summary.records).items()}
    for n in (64, 128):
        status, error = got[("faulty-raise", n)]
        assert status == "error" and "ValueError: faulty variant raised on purpose" in error
        status, error = got[("faulty-abort", n)]
        assert status == "crashed" and "SIGABRT" in error
        assert got[("softmax", n)] == ("ok", "")
        assert got[("faulty-slow", n)] == ("ok", "")
    status, error = got[("faulty-hang", 64)]
    assert status == "timeout" and "case_timeout_s (4 s)" in error
    status, error = got[("faulty-oom", 64)]
    assert status == "oom" and "out of memory" in error
    status, error = got[("faulty-hog", 64)]
    assert status == "oom" and "can't allocate memory" in error  # limits.memory_limit_mib, not the machine
    status, error = got[("faulty-oomkill", 64)]
    assert status == "oom" and "out-of-memory killer" in error
    for label in ("faulty-oom", "faulty-hog"):  # larger N of an OOM series are not even tried
        status, error = got[(label, 128)]
        assert status == "skipped" and "N=64 of this series ran out of memory" in error
    assert len(summary.records) == len(suite_mod.parse(small_suite(**FAULTS_SUITE)).cases())
    assert summary.exit_code == 3 and not summary.interrupted


@pytest.mark.slow
def test_good_cases_are_measured_in_full(fault_run):
    summary, _ = fault_run
    for key, record in by_label(summary.records).items():
        if key[0] in ("softmax", "faulty-slow"):
            assert [p["pass"] for p in record["passes"]] == ["forward", "backward"]
            assert all(p["status"] == "ok" and p["samples_ms"] for p in record["passes"])


@pytest.mark.slow
def test_dead_workers_are_replaced_and_live_ones_reused(fault_run):
    summary, _ = fault_run
    records = by_label(summary.records)
    pid = {key: r["worker_pid"] for key, r in records.items()}
    # An exception does not cost the worker; a crash, a timeout or a kill does.
    assert pid[("faulty-raise", 64)] == pid[("faulty-raise", 128)] == pid[("faulty-abort", 64)]
    assert len({pid[("faulty-abort", 64)], pid[("faulty-abort", 128)], pid[("softmax", 64)]}) == 3
    assert pid[("softmax", 64)] == pid[("softmax", 128)] == pid[("faulty-hang", 64)]
    assert pid[("faulty-slow", 64)] != pid[("faulty-hang", 64)]
    assert pid[("faulty-oom", 64)] == pid[("faulty-hog", 64)] == pid[("faulty-oomkill", 64)]
    assert pid[("faulty-slow", 64)] == pid[("faulty-oom", 64)]
    assert summary.workers_started == 4
    for p in set(pid.values()) - {None}:  # none left behind
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_disk_holds_every_case_and_the_table_shows_failures(fault_run):
    summary, _ = fault_run
    lines = (summary.run_dir / "cases.jsonl").read_text().splitlines()
    assert len(lines) == len(summary.records)
    csv = pd.read_csv(summary.run_dir / "results.csv")
    statuses = csv.drop_duplicates("case_id").set_index("label")["status"].to_dict()
    assert {"error", "crashed", "timeout", "oom", "skipped", "ok"} <= set(csv["status"])
    assert statuses["faulty-hang"] == "timeout"
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and meta["cases_done"] == meta["cases_total"] == len(lines)
    result = CliRunner().invoke(app, ["report", str(summary.run_dir)])
    assert result.exit_code == 0, result.output
    assert "cases that did not succeed" in result.output
    for shown in ("OOM", "timeout", "crashed", "error", "skipped"):
        assert shown in result.output


@pytest.mark.slow
@pytest.mark.parametrize("in_process", [False, True])
def test_interrupt_stops_the_sweep_in_either_mode(tmp_path, in_process):
    """Ctrl-C while a case runs stops the sweep (in-process too: no variant's
    ``except Exception`` may turn it into an error record)."""
    suite = suite_mod.load(write_suite(tmp_path / "slow.yaml", **SLOW_SUITE))
    out = tmp_path / "results"
    handler = signal.getsignal(signal.SIGINT)
    thread = signal_after(out, 2, signal.SIGINT)
    try:
        summary = run_suite(suite, RunOptions(out_dir=out, quiet=True, in_process=in_process))
    finally:
        thread.join()
    assert summary.interrupted and summary.exit_code == 130
    assert 2 <= len(summary.records) < 6
    assert all(r["status"] == "ok" for r in summary.records)
    assert signal.getsignal(signal.SIGINT) is handler  # handlers restored


@pytest.mark.slow
def test_a_sweep_with_rounds_measures_units_together_and_can_be_told_not_to(tmp_path: Path):
    text = """\
        name: together
        defaults: {dim: 32, passes: [forward]}
        grid: {seq_lens: [64, 128], heads: [2]}
        variants: [softmax, fastformer, {name: faulty-raise, seq_lens: [64]}]
        timing: {rounds: 2, warmup: 0, max_reps: 3, min_reps: 3, min_time_s: 0.001}
        """
    for interleave in (True, False):
        suite_text = text.replace("min_time_s: 0.001}", f"min_time_s: 0.001, interleave: {str(interleave).lower()}}}")
        suite = suite_mod.parse(textwrap.dedent(suite_text))
        summary = run_suite(suite, RunOptions(out_dir=tmp_path / str(interleave), quiet=True))
        visits = summary.visits
        assert len(visits) == 5 * 2
        assert {(r["case"]["label"], r["round"], r["status"]) for r in visits} == {
            *((label, k, "ok") for label in ("softmax", "fastformer") for k in (0, 1)),
            ("faulty-raise", 0, "error"), ("faulty-raise", 1, "skipped")}  # a failed case is not visited again
        # A unit's cases share their start when measured together, and not otherwise.
        starts: dict[tuple, set] = {}
        for r in visits:
            if r["status"] == "ok":
                starts.setdefault((r["round"], r["case"]["seq_len"]), set()).add(r["started_at"])
        assert all(len(s) == 1 for s in starts.values()) == interleave

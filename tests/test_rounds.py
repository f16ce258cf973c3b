"""Rounds: every case visited R times, each round in a shuffled order that the
run's seed reproduces; one record per visit; resume in the middle of a round;
calibration and noise in run.json. The sweep runs on a fake executor (no
torch work), so these tests are fast and exact."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from attnbench.bench.executors.base import Executor
from attnbench.bench.rundir import RunOptions
from attnbench.bench.sweep import plan_units, run_suite, setting_group
from attnbench.bench.worker.messages import CaseStarted, Meta, Outcome, PassResult
from attnbench.store.results import load_run
from attnbench.suite.load import parse

SUITE = """\
name: rounds
defaults: {dim: 32, passes: [forward, backward]}
grid: {seq_lens: [64, 128, 256], heads: [2, 4]}
variants: [softmax, linear, fastformer]
timing: {rounds: 4, warmup: 0, max_reps: 2, min_reps: 1, min_time_s: 0.01}
"""


def suite(text: str = SUITE):
    return parse(text, "rounds.yaml")


def test_every_case_is_visited_once_per_round_in_a_reproducible_shuffled_order():
    cases = suite().cases()
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


class FakeExecutor(Executor):
    """Yields a made-up outcome per case (time proportional to N) and can stop
    the sweep after ``stop_after`` cases, as Ctrl-C would."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.ran: list[tuple[str, int]] = []
        self.stop_after = stop_after
        self.fresh_calls = 0
        self.calibrations = 0

    def fresh(self) -> None:
        self.fresh_calls += 1

    def calibrate(self, device: str, dtype: str) -> dict:
        self.calibrations += 1
        return {"device": device, "dtype": dtype, "matmul_flops": 5e10 * (1 + 0.2 * self.calibrations),
                "bandwidth_bytes_per_s": 1.5e10}

    def run(self, cases):
        for case in cases:
            if self.stop_after is not None and len(self.ran) >= self.stop_after:
                raise KeyboardInterrupt
            yield CaseStarted(case)
            self.ran.append((case.case_id, case.round))
            messages = [Meta(family="x", param_count=1, threads=1, device_name="cpu", build_s=0.0)]
            for name in case.passes:
                ms = case.seq_len / 64 * (1 + 0.01 * case.round)
                messages.append(PassResult(pass_name=name, samples_ms=[ms, ms * 1.01], flops=10**6,
                                           peak_mem_mib=float(case.seq_len), memory_measured=case.round == 0))
            yield Outcome(case=case, messages=messages, started=0.0, wall_s=0.01)

    def close(self, interrupted: bool = False) -> None:
        pass


def test_a_run_records_one_line_per_visit_and_merges_them_per_case(tmp_path: Path):
    executor = FakeExecutor()
    summary = run_suite(suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    assert summary.exit_code == 0 and len(executor.ran) == 18 * 4 and executor.fresh_calls == 4
    lines = [json.loads(line) for line in (summary.run_dir / "cases.jsonl").read_text().splitlines()]
    assert Counter(line["round"] for line in lines) == {r: 18 for r in range(4)}
    run = load_run(summary.run_dir)
    assert len(run.records) == 18 and len(run.visits) == 72
    assert all(r["rounds"] == [0, 1, 2, 3] for r in run.records)
    assert [r["case_id"] for r in run.records] == [c.case_id for c in suite().cases()]  # the suite's order
    frame = run.frame()
    assert (frame["rounds"] == 4).all() and (frame["round_spread"] > 0).all() and len(frame) == 36
    assert (frame["peak_mem_mib"] == frame["seq_len"]).all()  # measured on the first visit
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert isinstance(meta["order_seed"], int) and meta["visits_done"] == meta["visits_total"] == 72
    # the run's seed reproduces its order
    planned = [(c.case_id, c.round) for u in plan_units(suite().cases(), 4, meta["order_seed"]) for c in u.cases]
    assert executor.ran == planned


def test_calibration_and_noise_go_into_run_json(tmp_path: Path):
    summary = run_suite(suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=FakeExecutor())
    meta = json.loads((summary.run_dir / "run.json").read_text())
    start, end = meta["calibration"]["start"], meta["calibration"]["end"]
    assert [c["device"] for c in start] == ["cpu"] and start[0]["dtype"] == "float32"
    assert start[0]["matmul_flops"] == pytest.approx(6e10) and end[0]["matmul_flops"] == pytest.approx(7e10)
    assert any("matmul rate" in w and "+17%" in w for w in summary.warnings)  # 60 -> 70 GFLOP/s: drift
    noise = meta["noise"]
    assert {"wall_s", "other_cpu_s", "other_share", "load_average_start", "load_average_end"} <= set(noise)


def test_resume_in_the_middle_of_a_round_runs_only_the_missing_visits_in_the_planned_order(tmp_path: Path):
    first = FakeExecutor(stop_after=25)  # 18 visits a round: stops in round 2
    summary = run_suite(suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=first)
    assert summary.interrupted and summary.exit_code == 130 and len(first.ran) == 25
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["visits_done"] == 25
    second = FakeExecutor()
    resumed = run_suite(suite(), RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True), executor=second)
    assert not resumed.interrupted and len(second.ran) == 72 - 25
    planned = [(c.case_id, c.round) for u in plan_units(suite().cases(), 4, meta["order_seed"]) for c in u.cases]
    assert first.ran + second.ran == planned
    run = load_run(summary.run_dir)
    assert len(run.visits) == 72 and all(r["rounds"] == [0, 1, 2, 3] for r in run.records)
    assert json.loads((summary.run_dir / "run.json").read_text())["calibration"]["start"][0]["matmul_flops"] == \
        pytest.approx(6e10)  # the run's first calibration stays


def test_a_changed_round_count_is_refused_on_resume(tmp_path: Path):
    summary = run_suite(suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=FakeExecutor(stop_after=3))
    from attnbench.errors import AttnbenchError

    with pytest.raises(AttnbenchError, match="timing.rounds: 4 -> 2"):
        run_suite(suite(SUITE.replace("rounds: 4", "rounds: 2")),
                  RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True), executor=FakeExecutor())


def test_a_run_recorded_before_rounds_and_turns_resumes_with_their_old_values(tmp_path: Path):
    one_visit = SUITE.replace("rounds: 4", "rounds: 1, interleave: false")
    summary = run_suite(suite(one_visit), RunOptions(out_dir=tmp_path, quiet=True),
                        executor=FakeExecutor(stop_after=5))
    assert summary.interrupted
    # what an attnbench from before the keys wrote: no rounds, no interleave, no round per record
    meta_path, jsonl = summary.run_dir / "run.json", summary.run_dir / "cases.jsonl"
    meta = json.loads(meta_path.read_text())
    for key in ("rounds", "interleave"):
        del meta["fingerprint"]["timing"][key]
    meta_path.write_text(json.dumps(meta))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for record in records:
        del record["round"], record["case"]["round"], record["case"]["timing"]["rounds"]
        del record["case"]["timing"]["interleave"]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    from attnbench.errors import AttnbenchError

    with pytest.raises(AttnbenchError) as refused:  # today's defaults would mix two ways of measuring
        run_suite(suite(), RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True), executor=FakeExecutor())
    assert "timing.rounds: 1 (the run predates this key) -> 4" in str(refused.value)
    assert "timing.interleave: False (the run predates this key) -> True" in str(refused.value)
    resumed = FakeExecutor()
    done = run_suite(suite(one_visit), RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True),
                     executor=resumed)
    assert done.exit_code == 0 and len(resumed.ran) == 18 - 5
    run = load_run(summary.run_dir)
    assert len(run.records) == 18 and len(run.visits) == 18


def test_a_failed_first_visit_is_not_repeated(tmp_path: Path):
    class Failing(FakeExecutor):
        def run(self, cases):
            for event in super().run(cases):
                if isinstance(event, Outcome) and event.case.label == "linear" and event.case.seq_len == 64:
                    event.status, event.error = "timeout", "too slow"
                yield event

    executor = Failing()
    summary = run_suite(suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    ran = Counter(case_id for case_id, _ in executor.ran)
    linear_64 = [k for k in ran if k.startswith("linear|N=64|")]
    assert len(linear_64) == 2 and all(ran[k] == 1 for k in linear_64)  # heads 2 and 4: first visit only
    records = {r["case_id"]: r for r in summary.records}
    assert all(records[k]["status"] == "timeout" for k in linear_64)
    assert summary.exit_code == 3


def test_later_visits_follow_the_first():
    from attnbench.bench.skip import skip_reason

    case = suite().cases()[0]
    later = replace(case, round=1)

    def first(status, passes):
        return {"case_id": case.case_id, "case": case.to_dict(), "round": 0, "status": status, "error": "why",
                "passes": [{"pass": p, "status": s} for p, s in passes.items()]}

    assert skip_reason(later, [first("ok", {"forward": "ok", "backward": "ok"})]) is None
    # a pass that cannot run here (FlexAttention's backward on CPU): the others are still visited
    assert skip_reason(later, [first("skipped", {"forward": "ok", "backward": "skipped"})]) is None
    assert skip_reason(later, [first("skipped", {})]) == "why"
    assert "round 1 ended timeout" in skip_reason(later, [first("timeout", {"forward": "ok"})])


def test_an_oom_skips_the_larger_n_of_its_series_in_every_round(tmp_path: Path):
    class OutOfMemory(FakeExecutor):
        def run(self, cases):
            for event in super().run(cases):
                if isinstance(event, Outcome) and event.case.label == "softmax" and event.case.seq_len == 128:
                    event.status, event.error = "oom", "out of memory"
                yield event

    executor = OutOfMemory()
    summary = run_suite(suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=executor)
    softmax = Counter(case_id.split("|")[1] for case_id, _ in executor.ran if case_id.startswith("softmax|"))
    assert softmax == {"N=64": 8, "N=128": 2}  # heads 2 and 4; N=128 once each, N=256 never
    statuses = {(r["case"]["seq_len"], r["case"]["heads"]): r["status"] for r in summary.records
                if r["case"]["label"] == "softmax"}
    assert statuses[(128, 2)] == "oom" and statuses[(256, 2)] == "skipped" and statuses[(64, 4)] == "ok"

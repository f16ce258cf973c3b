"""Resuming a run (attnbench.bench.rundir): a changed round count is refused, and a
run recorded before rounds and turns resumes with their old values."""

import json
from pathlib import Path

import pytest

from attnbench.bench.rundir import RunOptions
from attnbench.bench.sweep import run_suite
from attnbench.store.results import load_run
from tests.helpers import ROUNDS_SUITE, FakeExecutor, rounds_suite


def test_a_changed_round_count_is_refused_on_resume(tmp_path: Path):
    summary = run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, quiet=True), executor=FakeExecutor(stop_after=3))
    from attnbench.errors import AttnbenchError

    with pytest.raises(AttnbenchError, match="timing.rounds: 4 -> 2"):
        run_suite(rounds_suite(ROUNDS_SUITE.replace("rounds: 4", "rounds: 2")),
                  RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True), executor=FakeExecutor())


def test_a_run_recorded_before_rounds_and_turns_resumes_with_their_old_values(tmp_path: Path):
    one_visit = ROUNDS_SUITE.replace("rounds: 4", "rounds: 1, interleave: false")
    summary = run_suite(rounds_suite(one_visit), RunOptions(out_dir=tmp_path, quiet=True),
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
        run_suite(rounds_suite(), RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True),
                  executor=FakeExecutor())
    assert "timing.rounds: 1 (the run predates this key) -> 4" in str(refused.value)
    assert "timing.interleave: False (the run predates this key) -> True" in str(refused.value)
    resumed = FakeExecutor()
    done = run_suite(rounds_suite(one_visit), RunOptions(out_dir=tmp_path, resume=summary.run_dir, quiet=True),
                     executor=resumed)
    assert done.exit_code == 0 and len(resumed.ran) == 18 - 5
    run = load_run(summary.run_dir)
    assert len(run.records) == 18 and len(run.visits) == 18

"""``attnbench merge``: the shards of a sweep merged are the unsharded run; parts
of different suites or code, or that overlap, are refused before anything is
written; an incomplete merge warns and --resume fills it; quality records travel
with their shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.store.merge import merge_runs
from attnbench.store.results import load_run
from tests.helpers import flat


@pytest.mark.slow
def test_shards_merged_equal_the_unsharded_run(sharded, tmp_path):
    _, suite_path, whole, parts = sharded
    sizes = [len(load_run(p).records) for p in parts]
    assert all(sizes) and sum(sizes) == len(whole.records)
    for part in parts:  # each part is whole setting groups and knows what it is
        meta = json.loads((part / "run.json").read_text())
        assert meta["shard"]["count"] == 3 and meta["shard"]["suite_cases"] == len(whole.records)
    result = CliRunner().invoke(app, ["merge", *map(str, parts), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert f"merged 3 runs, {len(whole.records)} cases" in flat(result.output)
    merged = load_run(tmp_path / "merged")
    assert {r["case_id"]: r["status"] for r in merged.records} == {r["case_id"]: r["status"] for r in whole.records}
    assert merged.meta["status"] == "finished" and merged.meta["cases_total"] == len(whole.records)
    assert [p["shard"]["index"] for p in merged.meta["merged_from"]] == [1, 2, 3]
    assert len(merged.visits) == len(whole.visits) == 2 * len(whole.records)  # both rounds of every case
    csv = pd.read_csv(tmp_path / "merged" / "results.csv")
    reference = pd.read_csv(whole.run_dir / "results.csv")
    assert list(csv.columns) == list(reference.columns)
    assert sorted(zip(csv["case_id"], csv["pass"], strict=True)) == sorted(
        zip(reference["case_id"], reference["pass"], strict=True))
    assert set(csv["run_id"]) == {"merged"}
    for args in (["report", str(tmp_path / "merged")], ["compare", str(tmp_path / "merged")],
                 ["compare", str(whole.run_dir), str(tmp_path / "merged")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)


@pytest.mark.slow
def test_an_incomplete_merge_warns_and_resume_fills_it(parts_copy, tmp_path):
    suite_path, whole, parts = parts_copy
    out = tmp_path / "merged"
    summary = merge_runs(parts[:2], out)
    assert not summary.complete and any("shard(s) 3/3 not given" in w for w in summary.warnings)
    assert load_run(out).meta["status"] == "incomplete"
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(out), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    assert {r["case_id"] for r in load_run(out).records} == {r["case_id"] for r in whole.records}
    assert len((out / "cases.jsonl").read_text().splitlines()) == len(whole.visits)  # every visit once


def refused(args: list[str], tmp_path: Path) -> str:
    result = CliRunner().invoke(app, ["merge", *args, "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.*"))  # nothing half-written
    return flat(result.output)


@pytest.mark.slow
def test_overlapping_parts_are_refused(parts_copy, sharded, tmp_path):
    _, whole, parts = parts_copy
    assert "the parts overlap" in refused([str(parts[0]), str(whole.run_dir)], tmp_path)
    shutil.copytree(parts[0], tmp_path / "again")
    assert "shard 1/3 twice" in refused([str(parts[0]), str(tmp_path / "again")], tmp_path)
    assert "given twice" in refused([str(parts[0]), str(parts[0])], tmp_path)


@pytest.mark.slow
def test_parts_of_other_suites_or_code_are_refused(parts_copy, tmp_path):
    _, _, parts = parts_copy
    meta_path = parts[1] / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"]["timing"]["max_reps"] = 3
    meta_path.write_text(json.dumps(meta))
    message = refused([str(p) for p in parts], tmp_path)
    assert "not parts of one sweep" in message and "suite fingerprint" in message and str(parts[1]) in message
    meta["fingerprint"]["timing"]["max_reps"] = 2
    meta["environment"]["git_commit"] = "0" * 40
    meta_path.write_text(json.dumps(meta))
    assert "git commit '0000000000000000000000000000000000000000' differs" in refused([str(p) for p in parts],
                                                                                       tmp_path)


@pytest.mark.slow
def test_merge_will_not_overwrite(parts_copy, tmp_path):
    _, _, parts = parts_copy
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "something").write_text("")
    result = CliRunner().invoke(app, ["merge", *map(str, parts), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2 and "already exists" in flat(result.output)


def quality_line(task_id: str) -> str:
    return json.dumps({"task_id": task_id, "kind": "mqar", "label": "softmax", "variant": "softmax",
                       "status": "ok", "seed": 0}) + "\n"


@pytest.mark.slow
def test_quality_records_travel_with_their_shard(parts_copy, tmp_path):
    """A sharded sweep measures its quality tasks in shard 1; merge keeps them,
    and refuses a task measured in two parts."""
    _, _, parts = parts_copy
    (parts[0] / "quality.jsonl").write_text(quality_line("mqar|softmax|0") + quality_line("mqar|fastformer|0"))
    summary = merge_runs(parts, tmp_path / "merged")
    kept = (summary.run_dir / "quality.jsonl").read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in kept] == ["mqar|softmax|0", "mqar|fastformer|0"]
    (parts[2] / "quality.jsonl").write_text(quality_line("mqar|softmax|0"))
    message = refused([str(p) for p in parts], tmp_path / "again")
    assert "quality task mqar|softmax|0 is in" in message

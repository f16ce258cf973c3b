"""Shards (``run --shard K/N``) and ``attnbench merge``: the parts are
disjoint, deterministic and whole setting groups; merged they are the
unsharded run; parts of different suites or code, or that overlap, are
refused before anything is written."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.bench.rundir import RunOptions
from attnbench.bench.shard import (
    Shard,
    assign,
    estimated_seconds,
    parse_shard,
    setting_groups,
    shard_cases,
)
from attnbench.bench.sweep import run_suite
from attnbench.cli.app import app
from attnbench.errors import AttnbenchError
from attnbench.store.merge import merge_runs
from attnbench.store.results import load_run
from attnbench.suite import load as suite_mod

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
name: tiny
defaults: {dim: 32, passes: [forward, backward]}
grid: {seq_lens: [32, 64, 96, 128], heads: [2, 4]}
variants: [softmax, fastformer, {name: linformer, params: {k: 16}}]
timing: {warmup: 0, max_reps: 2, min_reps: 1, min_time_s: 0.01, rounds: 2}
"""


def flat(output: str) -> str:
    return output.replace("\n", "")


# --- the split ----------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("1/3", Shard(1, 3)), (" 3 / 3 ", Shard(3, 3)), ("1/1", Shard(1, 1))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", ""])
def test_parse_shard_refuses_nonsense(text):
    with pytest.raises(AttnbenchError, match="--shard"):
        parse_shard(text)


def test_assign_is_disjoint_complete_and_balanced():
    costs = [7.0, 1.0, 3.0, 3.0, 9.0, 2.0, 2.0, 5.0, 0.5]
    parts = assign(costs, 3)
    assert sorted(i for part in parts for i in part) == list(range(len(costs)))
    loads = [sum(costs[i] for i in part) for part in parts]
    # Longest processing time first is within 4/3 of the best split, and never
    # more than one item above the mean.
    assert max(loads) <= sum(costs) / 3 + max(costs)
    assert max(loads) - min(loads) <= max(costs)
    assert assign(costs, 3) == parts  # deterministic
    assert assign(costs, 20)[-1] == []  # more parts than items: some are empty


def test_gpu_suite_splits_into_whole_setting_groups():
    cases = suite_mod.load(ROOT / "suites" / "gpu.yaml").cases()
    parts = [shard_cases(cases, Shard(k, 4)) for k in range(1, 5)]
    ids = [c.case_id for part in parts for c in part]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(set(ids)) == len(ids)
    owner = {}
    for k, part in enumerate(parts):
        for case in part:  # every case of a setting group is in the same part
            assert owner.setdefault(case.setting, k) == k
    loads = [sum(estimated_seconds(c) for c in part) for part in parts]
    heaviest_group = max(sum(estimated_seconds(c) for c in g) for g in setting_groups(cases))
    assert max(loads) - min(loads) <= heaviest_group
    # The order within a part is the suite's (a series from small to large N).
    order = {c.case_id: i for i, c in enumerate(cases)}
    assert all([order[c.case_id] for c in part] == sorted(order[c.case_id] for c in part) for part in parts)


def test_split_ignores_progress_and_machine():
    """The same suite always gives the same parts (each job computes its own)."""
    cases = suite_mod.parse(TINY).cases()
    first = [c.case_id for c in shard_cases(cases, Shard(2, 3))]
    again = [c.case_id for c in shard_cases(list(suite_mod.parse(TINY).cases()), Shard(2, 3))]
    assert first == again and first


# --- sharded runs merged --------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run(suite_path: Path, out: Path, shard: Shard | None = None):
    summary = run_suite(suite_mod.load(suite_path), RunOptions(out_dir=out, quiet=True, in_process=True, shard=shard))
    assert summary.exit_code == 0
    return summary


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    suite_path = write(tmp / "tiny.yaml", TINY)
    whole = run(suite_path, tmp / "whole")
    parts = [run(suite_path, tmp / "parts", Shard(k, 3)).run_dir for k in (1, 2, 3)]
    return tmp, suite_path, whole, parts


@pytest.fixture
def parts_copy(sharded, tmp_path):
    _, suite_path, whole, parts = sharded
    copies = []
    for part in parts:
        shutil.copytree(part, tmp_path / part.name)
        copies.append(tmp_path / part.name)
    return suite_path, whole, copies


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


def test_overlapping_parts_are_refused(parts_copy, sharded, tmp_path):
    _, whole, parts = parts_copy
    assert "the parts overlap" in refused([str(parts[0]), str(whole.run_dir)], tmp_path)
    shutil.copytree(parts[0], tmp_path / "again")
    assert "shard 1/3 twice" in refused([str(parts[0]), str(tmp_path / "again")], tmp_path)
    assert "given twice" in refused([str(parts[0]), str(parts[0])], tmp_path)


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


def test_merge_will_not_overwrite(parts_copy, tmp_path):
    _, _, parts = parts_copy
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "something").write_text("")
    result = CliRunner().invoke(app, ["merge", *map(str, parts), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2 and "already exists" in flat(result.output)


def test_a_shard_resumes_as_the_same_shard(parts_copy):
    suite_path, _, parts = parts_copy
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(parts[0]), "--shard", "2/3", "-q"])
    assert result.exit_code == 2 and "shard: 1/3 -> 2/3" in flat(result.output), result.output
    before = len(load_run(parts[0]).records)
    result = CliRunner().invoke(app, ["run", str(suite_path), "--resume", str(parts[0]), "-q", "--in-process"])
    assert result.exit_code == 0, result.output
    assert len(load_run(parts[0]).records) == before  # the shard was complete: nothing else ran


def quality_line(task_id: str) -> str:
    return json.dumps({"task_id": task_id, "kind": "mqar", "label": "softmax", "variant": "softmax",
                       "status": "ok", "seed": 0}) + "\n"


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

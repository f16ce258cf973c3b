"""``attnbench runs``: the runs of a directory, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from attnbench.cli.app import app
from tests.helpers import fake_run

runner = CliRunner()


def test_runs_lists_the_runs_of_a_directory(tmp_path: Path):
    fake_run(tmp_path, "20261201-100000-one", "one", "finished")
    fake_run(tmp_path, "20261201-110000-two", "two", "interrupted")
    result = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for text in ("20261201-100000-one", "interrupted", "2/2", "Test CPU", "2026-12-01 10:00"):
        assert text in result.stdout
    payload = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)
    assert [r["suite"] for r in payload["runs"]] == ["one", "two"]
    assert runner.invoke(app, ["runs", str(tmp_path / "none")]).exit_code == 2


def test_a_shard_run_says_which_shard_it_is(tmp_path):
    import json as _json

    run = fake_run(tmp_path, "20260101-000000-s", "s", "finished")
    meta = _json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(_json.dumps({**meta, "shard": {"index": 2, "count": 8, "suite_cases": 16}}))
    fake_run(tmp_path, "20260101-000001-s", "s", "finished")
    result = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "shard" in result.stdout and " 2/8 " in result.stdout
    rows = _json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)["runs"]
    assert [r["shard"] for r in rows] == ["2/8", None]

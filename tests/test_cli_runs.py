"""`attnbench runs`, `report` on a directory of runs, and what `validate`
says about what would run (issue 18, items 12 and 13)."""

import json
from pathlib import Path

from typer.testing import CliRunner

from attnbench.cli.app import app

runner = CliRunner()

SUITE = """\
name: one
defaults: {batch: 1, dim: 32, passes: [forward]}
grid: {seq_lens: [64, 128], heads: [2]}
variants: [softmax]
"""


def fake_run(root: Path, name: str, suite: str, status: str, wall_s: float = 0.0) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "schema": 1, "run_id": name, "suite_name": suite, "started_at": "2026-12-01T10:00:00+00:00",
        "status": status, "cases_done": 2, "cases_total": 2, "environment": {"cpu_model": "Test CPU"}}))
    case = {"suite": suite, "variant": "softmax", "label": "softmax", "params": {}, "batch": 1, "heads": 2,
            "dim": 32, "dtype": "float32", "device": "cpu", "causal": False, "passes": ["forward"], "compile": False}
    lines = [json.dumps({"schema": 1, "case_id": f"softmax|N={n}|H=2|dim=32|B=1|float32|cpu|causal=0",
                         "case": {**case, "seq_len": n}, "status": "ok", "wall_s": wall_s,
                         "passes": [{"pass": "forward", "status": "ok", "samples_ms": [1.0, 1.1]}]})
             for n in (64, 128)]
    (run_dir / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


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


def test_report_on_a_directory_of_runs_points_to_runs(tmp_path: Path):
    fake_run(tmp_path, "r1", "one", "finished")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "attnbench runs" in result.output


def test_validate_says_what_would_run_and_estimates_from_an_earlier_run(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    result = runner.invoke(app, ["validate", str(suite), "--runs", str(tmp_path / "results")])
    assert result.exit_code == 0
    assert "1 variant, 2 cases, 2 timed passes" in result.stdout and "estimated" not in result.stdout
    fake_run(tmp_path / "results", "r1", "one", "finished", wall_s=3.0)
    result = runner.invoke(app, ["validate", str(suite), "--runs", str(tmp_path / "results")])
    assert "estimated time: about 6 s (from r1)" in result.stdout


def test_quick_without_a_quick_section_says_so(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    result = runner.invoke(app, ["validate", str(suite), "--quick"])
    assert result.exit_code == 0 and "no quick: section" in result.output
    result = runner.invoke(app, ["validate", str(suite)])
    assert "no quick: section" not in result.output


def test_failures_are_shown_once_without_internal_paths(tmp_path: Path):
    # issue 18, item 10
    import re

    import faulty_variants

    faulty_variants.register_all()
    try:
        suite = tmp_path / "f.yaml"
        suite.write_text(SUITE.replace("variants: [softmax]", "variants: [softmax, faulty-raise]"))
        result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "res"), "--in-process"],
                               env={"COLUMNS": "200"})
    finally:
        faulty_variants.unregister_all()
    assert result.exit_code == 3, result.output
    out = result.output
    assert out.count(faulty_variants.RAISE_MESSAGE) == 2  # one row per failed case (N=64, N=128), nothing else
    assert not re.search(r"\w+\.py:\d+", out), out
    assert "cases.jsonl (key 'traceback')" in out

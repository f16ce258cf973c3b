"""End to end through the CLI: run, report, compare, list, validate."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.store.results import CSV_COLUMNS, load_run

runner = CliRunner()

TINY = """\
name: tiny
baseline: softmax
defaults: {batch: 1, dim: 32}
grid: {seq_lens: [64, 128], heads: [2]}
variants:
  - softmax
  - sdpa
  - name: linformer
    params: {k: 16}
  - fastformer
timing: {warmup: 1, min_time_s: 0.01, max_reps: 3, min_reps: 2}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    suite = root / "tiny.yaml"
    suite.write_text(TINY)
    result = runner.invoke(app, ["run", str(suite), "--out", str(root / "results"), "--in-process", "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "results").iterdir()
    return run_dir


def test_run_writes_the_three_files_with_the_documented_columns(tiny_run: Path):
    assert {p.name for p in tiny_run.iterdir()} >= {"run.json", "cases.jsonl", "results.csv"}
    meta = json.loads((tiny_run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["environment"]["torch"]
    assert meta["cases_done"] == meta["cases_total"] == 8
    with open(tiny_run / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == 8 * 3
    assert {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert float(r["median_ms"]) > 0 and int(r["samples"]) >= 2
        assert float(r["peak_mem_mib"]) > 0 and int(r["flops"]) > 0 and float(r["tflops"]) > 0
        assert int(r["threads"]) >= 1 and r["head_dim"] == "16"
    fwd = {(r["label"], r["seq_len"]): int(r["flops"]) for r in rows if r["pass"] == "forward"}
    fb = {(r["label"], r["seq_len"]): int(r["flops"]) for r in rows if r["pass"] == "forward_backward"}
    assert all(fb[k] == 3 * fwd[k] for k in fwd)


def test_run_prints_the_table_on_stdout(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY.replace("[64, 128]", "[64]"))
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path), "--in-process", "-q"])
    assert result.exit_code == 0
    assert "fastformer" in result.stdout and "N=64" in result.stdout and "MiB" in result.stdout


def test_report_reprints_and_writes_csv(tiny_run: Path, tmp_path: Path):
    out_csv = tmp_path / "out.csv"
    result = runner.invoke(app, ["report", str(tiny_run), "--csv", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert "linformer" in result.stdout and "N=128" in result.stdout
    header = out_csv.read_text().splitlines()[0].split(",")
    assert header[:len(CSV_COLUMNS)] == CSV_COLUMNS  # then the paired speed-ups, their bounds, the roofline
    assert {"speedup", "speedup_low", "speedup_high", "mem_ratio_low", "peak_fraction"} <= set(header)


def test_compare_against_baseline_is_laid_out_like_lra(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), "--baseline", "softmax", "--pass", "forward"])
    assert result.exit_code == 0, result.output
    assert "(1.00x)" in result.stdout  # the baseline against itself
    assert "[95% interval] over this run's rounds" in " ".join(result.stdout.split())  # what the brackets are
    frame = load_run(tiny_run).frame()
    assert "steps/s" in result.stdout and set(frame["label"]) <= set(result.stdout.split())


def test_the_report_says_what_its_brackets_are(tiny_run: Path):
    result = runner.invoke(app, ["report", str(tiny_run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[" in result.stdout and "[95% interval] over this run's rounds" in result.stdout


def test_compare_with_an_unknown_baseline_is_exit_2(tiny_run: Path):
    result = runner.invoke(app, ["compare", str(tiny_run), "--baseline", "nope"])
    assert result.exit_code == 2 and "not in this run" in result.output


def test_worker_processes_give_the_same_cases(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY.replace("[64, 128]", "[64]"))
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    run = load_run(run_dir)
    assert sorted(r["case_id"] for r in run.records) == sorted(
        f"{v}|N=64|H=2|dim=32|B=1|float32|cpu|causal=0" for v in ("softmax", "sdpa", "linformer", "fastformer"))
    assert all(r["status"] == "ok" for r in run.records)


def test_list_and_validate():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "fastformer" in result.stdout
    result = runner.invoke(app, ["list", "fastformer"])
    assert result.exit_code == 0 and "2108.09084" in result.stdout
    data = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    assert data["schema"] == 1 and any(v["name"] == "softmax" for v in data["variants"])
    quick = Path(__file__).parents[1] / "suites" / "quick.yaml"
    result = runner.invoke(app, ["validate", str(quick)])
    assert result.exit_code == 0 and "ok" in result.stdout


def test_validate_reports_bad_suite_with_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("- sdpa", "- sdp"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:7: variants[1].name: unknown variant 'sdp'" in result.output
    assert "Traceback" not in result.output


def test_version():
    import attnbench

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"attnbench {attnbench.__version__}"


def test_an_unexpected_exception_is_a_bug_with_its_traceback_saved(tmp_path, monkeypatch):
    """Only attnbench's own errors are the user's (exit 2); a ValueError from
    inside the library is a bug: exit 1, one line, and the saved traceback."""
    import re

    import attnbench.report.build

    def broken(path):
        raise ValueError("something inside went wrong")

    monkeypatch.setattr(attnbench.report.build, "load_run", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "internal error" in result.output and "ValueError: something inside went wrong" in result.output
    assert "Traceback" not in result.output
    saved = Path(re.search(r"traceback is in (\S+)", result.output).group(1))
    assert saved.parent == tmp_path
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text

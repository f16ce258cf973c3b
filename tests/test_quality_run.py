"""The suite's ``quality:`` section: validation, `attnbench run` measuring it into
quality.jsonl with its own resume, and `report` (terminal, markdown, --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.errors import SuiteError
from attnbench.store.results import QUALITY_FILE, load_run
from attnbench.suite import load as suite_mod

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = """\
name: q
defaults: {dim: 32, passes: [forward]}
grid: {seq_lens: [64], heads: [2]}
variants:
  - softmax
  - {name: local, label: local-w8, params: {window: 8}}
  - aft
timing: {warmup: 0, max_reps: 2, min_reps: 1, min_time_s: 0.01}
quality:
  approx: {seq_lens: [64], regimes: [gaussian, peaked], seeds: [0], dim: 32, heads: 2}
  mqar:
    seeds: [0, 1]
    vocab: 16
    seq_len: 16
    pairs: 2
    dim: 16
    heads: 2
    steps: 4
    batch: 4
    warmup: 1
    eval_sequences: 8
    params:
      local-w8: {window: 2}
quick:
  quality:
    measures: [approx]
"""


def write(tmp_path: Path, text: str = SUITE) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(text)
    return path


def flat(text: str) -> str:
    return " ".join(text.split())


def run_cli(*args: str) -> object:
    return CliRunner().invoke(app, [*args])


def test_the_section_is_validated_and_read(tmp_path: Path) -> None:
    suite = suite_mod.load(write(tmp_path))
    q = suite.quality
    assert q.measures == ("approx", "mqar") and q.mqar.steps == 4 and q.mqar_seeds == (0, 1)
    assert q.mqar_params == {"local-w8": {"window": 2}} and q.approx.regimes == ("gaussian", "peaked")
    assert suite_mod.load(write(tmp_path), quick=True).quality.measures == ("approx",)
    assert "quality" in suite.fingerprint()
    assert suite_mod.parse("grid: {seq_lens: [8], heads: [1]}\nvariants: [softmax]\n").quality is None


@pytest.mark.parametrize(("change", "where"), [
    (("regimes: [gaussian, peaked]", "regimes: [uniform]"), "quality.approx.regimes[0]"),
    (("steps: 4", "stpes: 4"), "quality.mqar.stpes"),
    (("window: 2}", "windw: 2}"), "quality.mqar.params.local-w8.windw"),
    (("local-w8: {", "local: {"), "quality.mqar.params.local"),
    (("pairs: 2", "pairs: 5"), "quality.mqar"),
    (("measures: [approx]", "measures: [speed]"), "quick.quality.measures[0]"),
])
def test_a_mistake_names_its_key(tmp_path: Path, change: tuple[str, str], where: str) -> None:
    text = SUITE.replace(*change)
    assert text != SUITE
    with pytest.raises(SuiteError) as info:
        suite_mod.load(write(tmp_path, text), quick=where.startswith("quick."))
    assert info.value.key == where and info.value.line


def test_run_measures_quality_resumes_and_reports(tmp_path: Path) -> None:
    suite_path = write(tmp_path)
    result = run_cli("run", str(suite_path), "--out", str(tmp_path / "runs"), "--in-process", "-q")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    lines = (run_dir / QUALITY_FILE).read_text().splitlines()
    assert len(lines) == 3 * 2 + 3 * 2  # approx: 3 variants x 2 regimes; mqar: 3 variants x 2 seeds
    records = [json.loads(line) for line in lines]
    by_id = {r["task_id"]: r for r in records}
    assert by_id["approx/aft/N64/peaked/seed0"]["status"] == "not an approximation"
    assert by_id["approx/softmax/N64/gaussian/seed0"]["output_error"] < 1e-12
    assert by_id["mqar/local-w8/seed1"]["params"] == {"window": 2}  # MQAR's own parameters
    assert "multi-query associative recall" in flat(result.output)

    # Resume: nothing is measured again; a truncated last line is measured again.
    (run_dir / QUALITY_FILE).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    result = run_cli("run", str(suite_path), "--resume", str(run_dir), "--in-process", "-q")
    assert result.exit_code == 0, result.output
    again = (run_dir / QUALITY_FILE).read_text().splitlines()
    assert len(again) == len(lines) and json.loads(again[-1])["task_id"] == records[-1]["task_id"]
    assert [json.loads(x)["task_id"] for x in again[:-1]] == [r["task_id"] for r in records[:-1]]

    # A changed MQAR budget makes the recorded accuracies incomparable: refused.
    changed = write(tmp_path, SUITE.replace("steps: 4", "steps: 5"))
    result = run_cli("run", str(changed), "--resume", str(run_dir), "--in-process", "-q")
    assert result.exit_code == 2 and "quality.mqar.steps: 4 -> 5" in flat(result.output)

    report = run_cli("report", str(run_dir))
    assert report.exit_code == 0
    text = flat(report.output)
    assert "approximation error" in text and "not an approximation" in text and "seed 1" in text
    data = json.loads(run_cli("report", str(run_dir), "--json").stdout)
    assert len(data["quality"]["records"]) == 12
    assert data["quality"]["mqar"]["seeds"] == [0, 1]
    assert {r["label"] for r in data["quality"]["approx"]["rows"]} == {"softmax", "local-w8", "aft"}
    md = tmp_path / "r.md"
    assert run_cli("report", str(run_dir), "--markdown", str(md)).exit_code == 0
    assert "## multi-query associative recall (MQAR)" in md.read_text()
    assert len(load_run(run_dir).quality) == 12


def test_validate_counts_the_quality_measurements(tmp_path: Path) -> None:
    result = run_cli("validate", str(write(tmp_path)))
    assert result.exit_code == 0 and "quality: 6 approx + 6 mqar measurements" in flat(result.output)
    result = run_cli("validate", str(write(tmp_path)), "--quick")
    assert "quality: 6 approx + 0 mqar measurements" in flat(result.output)


def test_a_failing_measurement_is_exit_3(tmp_path: Path) -> None:
    text = SUITE.replace("window: 2}", "window: 0}")  # local refuses a window of 0 at MQAR's N
    result = run_cli("run", str(write(tmp_path, text)), "--out", str(tmp_path / "runs"), "--in-process", "-q")
    assert result.exit_code == 3, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    statuses = {r["task_id"]: r["status"] for r in load_run(run_dir).quality}
    assert statuses["mqar/local-w8/seed0"] == "error" and statuses["mqar/softmax/seed0"] == "ok"

"""``attnbench validate``: a bad suite is exit 2 naming its line, parameter values
are checked, what would run and an estimate from an earlier run, the quick
section and the quality measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from attnbench.cli.app import app
from tests.helpers import HONEST_SUITE, ONE_SUITE, TINY_SUITE, fake_run, invoke, words, write_quality_suite, write_suite

runner = CliRunner()


def test_validate_reports_bad_suite_with_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    write_suite(bad, **{**TINY_SUITE, "variants": ["softmax", "sdp", *TINY_SUITE["variants"][2:]]})
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:7: variants[1].name: unknown variant 'sdp'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("variant", "params", "key", "hint"), [
    ("linformer", "{k: '32'}", "k", "int"),
    ("sdpa", "{backend: flsh}", "backend", "flash"),
    ("synthesizer", "{mode: dens}", "mode", "dense"),
])
def test_validate_checks_parameter_values(tmp_path: Path, variant: str, params: str, key: str, hint: str):
    variants = ["softmax", {"name": variant, "params": yaml.safe_load(params)}]
    suite = write_suite(tmp_path / "s.yaml", **{**HONEST_SUITE, "variants": variants})
    result = runner.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    out = words(result.output)
    assert "s.yaml:8" in out and key in out and hint in out, out
    assert "Traceback" not in result.output


def test_validate_says_what_would_run_and_estimates_from_an_earlier_run(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    write_suite(suite, **ONE_SUITE)
    result = runner.invoke(app, ["validate", str(suite), "--runs", str(tmp_path / "results")])
    assert result.exit_code == 0
    assert "1 variant, 2 cases, 2 timed passes" in result.stdout and "estimated" not in result.stdout
    fake_run(tmp_path / "results", "r1", "one", "finished", wall_s=3.0)
    result = runner.invoke(app, ["validate", str(suite), "--runs", str(tmp_path / "results")])
    assert "estimated time: about 18 s (from r1)" in result.stdout  # 2 cases × 3 s, in each of 3 rounds


def test_quick_without_a_quick_section_says_so(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    write_suite(suite, **ONE_SUITE)
    result = runner.invoke(app, ["validate", str(suite), "--quick"])
    assert result.exit_code == 0 and "no quick: section" in result.output
    result = runner.invoke(app, ["validate", str(suite)])
    assert "no quick: section" not in result.output


def test_validate_counts_the_quality_measurements(tmp_path: Path) -> None:
    result = invoke("validate", str(write_quality_suite(tmp_path)))
    assert result.exit_code == 0 and "quality: 6 approx + 6 mqar measurements" in words(result.output)
    result = invoke("validate", str(write_quality_suite(tmp_path)), "--quick")
    assert "quality: 6 approx + 0 mqar measurements" in words(result.output)


def test_the_estimate_scales_the_last_runs_whole_wall_time(tmp_path: Path):
    suite = write_suite(tmp_path / "s.yaml", **{**ONE_SUITE, "grid": {"seq_lens": [64, 128], "heads": [2]},
                                                 "variants": ["softmax"], "timing": {"rounds": 3}})
    run = fake_run(tmp_path / "runs", "20260101-000000-one", "one", "finished", wall_s=2.0)
    meta = yaml.safe_load((run / "run.json").read_text())
    # one visit of each case, 4 s of case time in a run of 100 s (start-up, calibration, memory runs)
    meta.update(noise={"wall_s": 100.0}, history=[{"command": ["attnbench", "run"]}])
    (run / "run.json").write_text(json.dumps(meta))
    result = invoke("validate", suite, "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "about 5.0 min" in result.stdout  # 100 s × (3 rounds of 4 s) / 4 s, not the 4 s of one visit


def test_errors_are_listed_in_the_files_order(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nname: bad\ndefaults: {dim: -4}\ngrid: {seq_lens: [64], heads: [2]}\n"
                    "variants:\n  - softmax\n  - name: linformer\n    params: {k: zero}\ntiming: {rounds: 0}\n")
    result = invoke("validate", path)
    assert result.exit_code == 2
    found = [int(part.split(":", 2)[1]) for part in result.output.split(str(path))[2:]]  # each error's line
    assert found == sorted(found) and len(found) == 3


def test_a_case_that_cannot_fit_in_memory_is_warned_at_validate(tmp_path: Path):
    suite = write_suite(tmp_path / "big.yaml", **{**ONE_SUITE, "grid": {"seq_lens": [131072], "heads": [4]},
                                                   "defaults": {"dim": 256, "passes": ["forward"]},
                                                   "variants": ["softmax", "linear"]})
    result = invoke("validate", suite)
    assert result.exit_code == 0, result.output
    assert "would not fit" in result.output and "softmax N=131072 H=4: estimated peak memory 256.0 GiB" in result.output
    assert "linear N=131072" not in result.output

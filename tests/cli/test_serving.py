"""The command line serves: validate names the refused passes, run measures a
small decode suite end to end, report shows the decode table and writes the
decode chart (and refuses it for a run without decode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import invoke, write

SUITE = """\
name: serve
defaults: {head_dim: 8, causal: true, passes: [prefill, decode], decode_steps: 4}
grid: {seq_lens: [32, 64], heads: [4], kv_heads: [4, 2]}
variants: [sdpa, linear, reformer]
timing: {rounds: 2, warmup: 0, max_reps: 3, min_reps: 2, min_time_s: 0.001}
"""


def test_validate_names_what_a_variant_refuses(tmp_path: Path) -> None:
    result = invoke("validate", write(tmp_path / "s.yaml", SUITE), "--runs", tmp_path)
    assert result.exit_code == 0
    assert "reformer: prefill, decode skipped: cannot decode" in result.stderr


@pytest.mark.slow
def test_a_decode_suite_runs_and_reports(tmp_path: Path) -> None:
    result = invoke("run", write(tmp_path / "s.yaml", SUITE), "--out", tmp_path / "runs", "--in-process")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    from typer.testing import CliRunner

    from attnbench.cli.app import app

    report = CliRunner().invoke(app, ["report", str(run_dir), "--plot-decode", str(tmp_path / "decode.png")],
                                env={"COLUMNS": "100"})
    assert report.exit_code == 0, report.output
    assert "decode: µs per token" in report.stdout and "sdpa kv2" in report.stdout
    assert "x-over" in report.stdout
    assert (tmp_path / "decode.png").stat().st_size > 10_000
    import pandas as pd

    frame = pd.read_csv(run_dir / "results.csv")
    decode = frame[frame["pass"] == "decode"]
    assert set(decode["kv_heads"]) == {4, 2} and (decode["decode_steps"] == 4).all()
    assert decode["cache_mib"].notna().all() and decode["bandwidth_pct"].notna().all()
    assert not (frame["label"] == "reformer").any()


def test_plot_decode_of_a_run_without_decode_is_refused(tmp_path: Path) -> None:
    from tests.helpers import recorded_run

    run = recorded_run("tiny", tmp_path)
    result = invoke("report", run, "--plot-decode", tmp_path / "d.png")
    assert result.exit_code == 2 and "no measured decode case" in result.stderr

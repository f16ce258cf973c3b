"""The trade-off chart (plots.py, LRA Figure 3): which points it places, from
which N and scores, what it lists instead of dropping, and the files it writes."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.errors import AttnbenchError
from attnbench.report.plots import plot_tradeoff, published_tradeoff_points, tradeoff_points
from tests.test_analysis import frame_of

REFERENCE_LRA = Path(__file__).resolve().parents[1] / "results" / "reference-cpu" / "lra"
SCORES = pd.DataFrame({"variant": ["softmax", "linear", "local"], "score": [54.39, 50.55, 46.06]})


def run_frame() -> pd.DataFrame:
    # fnet has no LRA score; local failed at 2048 (absent), so 2048 has two labels and 1024 three
    frame = frame_of({"softmax": [10.0, 40.0], "linear": [2.0, 4.0], "fnet": [1.0, 2.0]}, ns=[1024, 2048],
                     mem={"softmax": [100.0, 400.0], "linear": [10.0, 20.0], "fnet": [5.0, 10.0]})
    local = frame_of({"local": [3.0]}, ns=[1024])
    return pd.concat([frame, local], ignore_index=True)


def test_points_at_the_largest_n_most_labels_measured_with_published_scores():
    points, n, notes = tradeoff_points(run_frame(), SCORES)
    assert n == 1024  # four labels there, three at 2048
    by_label = points.set_index("label")
    assert list(by_label.index) == ["softmax", "linear", "local"]
    assert by_label.loc["linear", "examples_per_s"] == pytest.approx(1000 / 2.0)  # batch 1 × steps/s
    assert by_label.loc["softmax", "memory"] == pytest.approx(100.0)
    assert by_label.loc["local", "score"] == pytest.approx(46.06)
    assert notes == ["no published LRA score: fnet"]


def test_labels_missing_at_that_n_are_listed_and_measured_quality_replaces_the_scores():
    frame = run_frame()
    frame = frame[~(frame["label"] == "local")]
    points, n, notes = tradeoff_points(frame, SCORES, quality={"softmax": 0.9, "fnet": 0.7})
    assert n == 2048 and list(points["label"]) == ["softmax", "fnet"]
    assert list(points["score"]) == [0.9, 0.7]  # measured, not LRA's
    assert notes == ["no measured score: linear"]
    with_missing = tradeoff_points(run_frame()[lambda f: ~((f["label"] == "fnet") & (f["seq_len"] == 1024))],
                                   SCORES)
    assert with_missing[1] == 2048 and "not measured at N=2K: local" in with_missing[2]


def test_published_panel_is_lra_table2_at_4k_with_table1_averages():
    points = published_tradeoff_points().set_index("label")
    assert len(points) == 9
    assert points.loc["Transformer", "examples_per_s"] == pytest.approx(32 * 1.4)
    assert points.loc["Performer", "memory"] == pytest.approx(1.06)
    assert points.loc["BigBird", "score"] == pytest.approx(55.01)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_tradeoff_writes_the_file(tmp_path, suffix):
    out = plot_tradeoff(run_frame(), tmp_path / f"chart{suffix}", title="t")
    assert out.is_file() and out.stat().st_size > 1000
    if suffix == ".svg":  # the unscored label is listed under the chart, not dropped
        assert "fnet" in out.read_text(encoding="utf-8")


def test_plot_tradeoff_refuses_other_formats_and_empty_runs(tmp_path):
    with pytest.raises(AttnbenchError, match=r"\.png or \.svg"):
        plot_tradeoff(run_frame(), tmp_path / "chart.pdf")
    with pytest.raises(AttnbenchError, match="no successful"):
        plot_tradeoff(run_frame().assign(status="oom"), tmp_path / "chart.png")


@pytest.mark.skipif(not (REFERENCE_LRA / "results.csv").is_file(), reason="no reference LRA run")
def test_cli_report_plot_tradeoff(tmp_path):
    out = tmp_path / "tradeoff.png"
    result = CliRunner().invoke(app, ["report", str(REFERENCE_LRA), "--plot-tradeoff", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.stat().st_size > 10000

"""The trade-off chart (attnbench.report.plots, LRA Figure 3): which points it places,
from which N and scores, what it lists instead of dropping, and the files it
writes; log axes keep their tick labels."""

import pandas as pd
import pytest

from attnbench.errors import AttnbenchError
from attnbench.report.plots import plot_tradeoff, published_tradeoff_points, tradeoff_points
from tests.helpers import frame_of

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


@pytest.mark.slow
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


def test_a_log_axis_within_a_decade_still_has_tick_labels():
    # issue 18, item 11: between 1.1 and 1.9 matplotlib labels no tick at all
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from attnbench.report.plots import readable_log_ticks

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1.1, 1.4, 1.9])
    ax.set_yscale("log")
    readable_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert len(labels) >= 2 and all(1.0 <= float(x) <= 2.0 for x in labels), labels


def test_an_exact_attention_takes_the_transformers_score_and_the_unscored_are_drawn_apart():
    from attnbench.report.plots import unscored_points, variant_colors

    frame = frame_of({"softmax": [10.0, 40.0], "sdpa": [8.0, 30.0], "fnet": [1.0, 2.0]}, ns=[1024, 2048])
    frame["family"] = frame["label"].map({"softmax": "exact", "sdpa": "exact", "fnet": "mixer"})
    points, n, notes = tradeoff_points(frame, SCORES)
    by_label = points.set_index("label")
    assert by_label.loc["sdpa", "score"] == pytest.approx(54.39)  # softmax's: the Transformer's
    assert "exact attention, placed at the Transformer's score: sdpa" in notes
    apart = unscored_points(frame, n, points)
    assert list(apart["label"]) == ["fnet"] and apart["score"].isna().all()
    published = published_tradeoff_points()
    colors = variant_colors(published, points, apart)
    assert set(published["variant"]) >= {"softmax", "linear"} and colors["softmax"] != colors["linear"]
    assert len(colors) == len(set(published["variant"]) | {"sdpa", "fnet"})  # one colour per variant


@pytest.mark.slow
def test_a_label_the_font_lacks_is_one_note_not_a_warning(tmp_path, recwarn):
    from attnbench.report.plots import plot_run

    frame = frame_of({"softmax": [1.0, 4.0], "线性注意力": [1.0, 2.0]}, ns=[256, 512])
    notes: list[str] = []
    plot_run(frame, tmp_path / "p.png", messages=notes)
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    assert len(notes) == 1 and "not in the plot's font" in notes[0]

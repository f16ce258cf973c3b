"""How a report writes its figures (attnbench.report.cells): nothing a run
holds can mark up the markdown, a fit that does not hold is written 'poor', a
paired speed-up far from its medians' ratio is marked, and the summary line
names the fastest variant with its interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnbench.analysis.scaling import fit_power_law, scaling_summary
from attnbench.report.build import ReportOptions, build_report
from attnbench.report.cells import (
    PAIRED_MARK,
    POOR_FIT,
    allocator_text,
    fastest_lines,
    md_escape,
    paired_differs,
    relative_cell,
    scaling_rows,
)
from attnbench.report.markdown import markdown_report
from attnbench.store.results import load_run
from tests.helpers import frame_of, record, write_run


def test_text_from_a_run_is_literal_in_markdown():
    assert md_escape("<b>x|y</b>") == "&lt;b&gt;x\\|y&lt;/b&gt;"
    assert md_escape("a_b *c* [l](u) `t`") == "a\\_b \\*c\\* \\[l\\](u) \\`t\\`"


def test_a_label_with_markup_neither_renders_nor_breaks_its_table(tmp_path):
    label = "<b>bold|x</b>"
    rng = np.random.default_rng(0)
    records = [record(name, n, {"forward": list(t * np.exp(rng.normal(0, 0.01, 5)))}, rnd=r)
               for r in range(2) for n in (64, 128) for name, t in (("softmax", n / 16), (label, n / 64))]
    for rec in records:  # the label is the variant's in every key
        rec["case"]["variant"] = "linear" if rec["case"]["label"] == label else "softmax"
    run = load_run(write_run(tmp_path / "run", records))
    md = markdown_report(build_report(run, ReportOptions("softmax")))
    assert "<b>" not in md and "&lt;b&gt;bold\\|x&lt;/b&gt;" in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert all(line.count(" | ") == table_lines[0].count(" | ") for line in table_lines[:4])


def test_a_fit_whose_points_scatter_is_written_poor():
    ns = [256, 512, 1024, 2048]
    busy = fit_power_law(ns, [4.10, 118, 116, 40.8])  # the new-user trial's Fastformer on a busy machine
    assert busy.poor and busy.r2 < 0.9
    assert not fit_power_law(ns, [2.26, 4.7, 13.7, 49.8]).poor  # a steep, clean one
    assert not fit_power_law(ns, [1.0, 1.02, 0.98, 1.01]).poor  # flat: low R², tiny residuals
    frame = frame_of({"softmax": [2.26, 4.7, 13.7, 49.8], "fastformer": [4.10, 118, 116, 40.8]}, ns=ns)
    rows = {r[0]: r for r in scaling_rows(scaling_summary(frame, "softmax", "forward_backward"))}
    assert rows["fastformer"][3] == POOR_FIT and rows["fastformer"][5] == POOR_FIT  # time k, k top
    assert rows["fastformer"][-1] == POOR_FIT  # and its crossover
    assert rows["softmax"][3] not in (POOR_FIT, "-")


def test_a_paired_estimate_far_from_the_medians_ratio_is_marked():
    row = {"status": "ok", "noisy": True, "median_ms": 25.1, "speedup": 0.92, "speedup_low": 0.44,
           "speedup_high": 1.90, "speedup_method": "t-rounds", "speedup_medians": 0.47}
    assert paired_differs(row)
    assert relative_cell(pd.Series(row), "speed") == f"39.8~ (0.92x{PAIRED_MARK} [0.44–1.90])"
    close = {**row, "speedup_medians": 0.90}
    assert not paired_differs(close) and PAIRED_MARK not in relative_cell(pd.Series(close), "speed")


def test_the_summary_names_the_fastest_variant_at_the_largest_n(tmp_path):
    rng = np.random.default_rng(1)
    records = [record(name, n, {"forward": list(n / speed * np.exp(rng.normal(0, 0.01, 5)))}, rnd=r)
               for r in range(3) for n in (64, 128) for name, speed in (("softmax", 16), ("linear", 64))]
    report = build_report(load_run(write_run(tmp_path / "run", records)), ReportOptions("softmax"))
    (line,) = fastest_lines(report)
    assert line.startswith("linear ran 4.0") and line.endswith("faster than softmax at N=128, forward")
    assert "[" in line  # with its paired interval


def test_the_allocator_says_what_it_means():
    assert allocator_text(None) is None
    assert allocator_text("steady").startswith("steady (glibc malloc's thresholds fixed")
    assert "mapped afresh" in allocator_text("default")

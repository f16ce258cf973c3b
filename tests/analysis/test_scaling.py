"""Scaling exponents and crossovers (attnbench.analysis.scaling), on synthetic
results frames (no timing)."""

import math
from pathlib import Path

import numpy as np
import pytest

from attnbench.analysis.scaling import crossover, fit_power_law, scaling_summary
from attnbench.store.results import load_run
from tests.helpers import NS, frame_of


def test_exponent_of_quadratic_and_linear_data():
    fit = fit_power_law(NS, [3e-6 * n * n for n in NS])
    assert fit.exponent == pytest.approx(2.0, abs=1e-9) and fit.r2 == pytest.approx(1.0)
    assert fit.predict(8192) == pytest.approx(3e-6 * 8192**2)
    rng = np.random.default_rng(0)
    noisy = [0.01 * n * math.exp(rng.normal(0, 0.02)) for n in NS]
    fit = fit_power_law(NS, noisy)
    assert fit.exponent == pytest.approx(1.0, abs=0.05) and 0.99 < fit.r2 <= 1.0
    assert fit_power_law(NS, [0.5] * 5).exponent == pytest.approx(0.0, abs=1e-12)


def test_exponent_edge_cases():
    assert fit_power_law([1024], [1.0]) is None
    assert fit_power_law([1024, 1024], [1.0, 2.0]) is None  # one distinct N
    two = fit_power_law([1024, 2048], [1.0, 4.0])
    assert two.exponent == pytest.approx(2.0) and math.isnan(two.r2)  # exact fit: R² says nothing
    # missing and non-positive values are left out
    fit = fit_power_law([256, 512, 1024, 2048], [1.0, float("nan"), 0.0, 8.0])
    assert fit.points == 2 and fit.exponent == pytest.approx(1.0)


def test_crossover_is_interpolated_in_log_log():
    base = [n * n / 1e4 for n in NS]  # quadratic
    lin = [n / 10 for n in NS]  # equal to base at N = 1000
    c = crossover(NS, lin, base)
    assert c.kind == "at" and c.n == pytest.approx(1000, rel=1e-9)
    assert str(c) == "1,000"
    # exactly equal at a measured N: the crossover is that N
    c = crossover([256, 512, 1024], [2.0, 2.0, 2.0], [1.0, 2.0, 4.0])
    assert c.kind == "at" and c.n == pytest.approx(512)


def test_crossover_below_the_range_and_never():
    base = [n * n / 1e4 for n in NS]
    below = crossover(NS, [n / 1e4 for n in NS], base)
    assert below.kind == "below" and str(below).startswith("below the range") and "256" in str(below)
    never = crossover(NS, [n * n / 1e3 for n in NS], base)  # always 10x slower, same slope
    assert never.kind == "never" and never.extrapolated is None and str(never) == "never (≤ 4,096)"
    # slower over the whole range but growing more slowly: the fitted lines meet beyond it
    late = crossover(NS, [n for n in NS], base)  # equal at N = 10,000
    assert late.kind == "never" and late.extrapolated == pytest.approx(1e4, rel=1e-6)
    assert "≈10,000 extrapolated" in str(late)
    # faster, then slower again at the top: it has not overtaken for good
    assert crossover([256, 512, 1024], [0.5, 1.0, 5.0], [1.0, 2.0, 4.0]).kind == "never"
    assert crossover([256], [1.0], [2.0]).kind == "n/a"


def test_scaling_summary_per_variant():
    times = {"softmax": [n * n / 1e4 for n in NS], "linear": [n / 10 for n in NS],
             "tiny": [n / 1e5 for n in NS]}
    mem = {"softmax": [n * n / 100 for n in NS], "linear": [n / 10 for n in NS], "tiny": [n / 10 for n in NS]}
    summary = scaling_summary(frame_of(times, mem=mem), "softmax", "forward_backward").set_index("label")
    assert summary.loc["softmax", "time_exponent"] == pytest.approx(2.0)
    assert summary.loc["softmax", "mem_exponent"] == pytest.approx(2.0)
    assert summary.loc["linear", "time_exponent"] == pytest.approx(1.0)
    assert summary.loc["linear", "time_r2"] == pytest.approx(1.0)
    assert summary.loc["linear", "crossover_n"] == pytest.approx(1000)
    assert summary.loc["softmax", "crossover"] == "-"
    assert summary.loc["tiny", "crossover_kind"] == "below"
    # a failed case is left out of the fit
    frame = frame_of(times, mem=mem)
    frame.loc[(frame["label"] == "linear") & (frame["seq_len"] == 4096), "status"] = "oom"
    s = scaling_summary(frame, "softmax", "forward_backward").set_index("label")
    assert s.loc["linear", "points"] == 4 and s.loc["linear", "time_exponent"] == pytest.approx(1.0)


def test_upper_half_exponent_ignores_fixed_overheads_at_small_n():
    # a fixed 5 ms overhead plus a quadratic term: the whole-range fit is flattened,
    # the upper half (N = 1024..4096) is close to 2
    times = {"softmax": [5 + (n / 256) ** 2 for n in NS], "linear": [5 + n / 256 for n in NS]}
    s = scaling_summary(frame_of(times), None, "forward_backward").set_index("label")
    assert s.loc["softmax", "time_exponent"] < 1.5 and s.loc["softmax", "time_exponent_top"] > 1.75
    assert s.loc["softmax", "crossover"] == "-" and s.loc["linear", "crossover"] == "-"  # no baseline


def test_crossover_value_is_right(lra_run_dir: Path):
    # linear 15·x ms vs softmax 10·x² ms (x = N/1024) meet at x = 1.5, i.e. N = 1536; interpolated in
    # log-log between 1024 and 2048 the lines are straight, so the crossover is exact
    from attnbench.analysis.scaling import scaling_summary

    s = scaling_summary(load_run(lra_run_dir).frame(), "softmax", "forward_backward").set_index("label")
    assert s.loc["linear", "crossover_n"] == pytest.approx(1536, rel=1e-6)

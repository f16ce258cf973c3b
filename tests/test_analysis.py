"""Scaling exponents, crossovers, the published LRA table and rank agreement,
on synthetic results frames (no timing)."""

import math

import numpy as np
import pandas as pd
import pytest

from attnbench.analysis.agreement import published_correlation, published_side_by_side
from attnbench.analysis.baseline import add_quartiles
from attnbench.analysis.scaling import crossover, fit_power_law, scaling_summary
from attnbench.stats.paired import spearman
from attnbench.store.published import load_published, published_names
from attnbench.store.results import CSV_COLUMNS

NS = [256, 512, 1024, 2048, 4096]


def frame_of(times: dict[str, list[float]], ns=NS, pass_name="forward_backward", mem=None, heads=4,
             variants=None) -> pd.DataFrame:
    """A tidy results frame: one ok row per label and N (median = the given time)."""
    rows = []
    for label, ts in times.items():
        for n, t in zip(ns, ts, strict=True):
            row = dict.fromkeys(CSV_COLUMNS)
            row.update(label=label, variant=(variants or {}).get(label, label), batch=1, dim=256, dtype="float32",
                       device="cpu", causal=False, heads=heads, seq_len=n, status="ok", median_ms=t,
                       iqr_ms=0.01 * t, noisy=False, samples=5, case_id=f"{label}|N={n}",
                       peak_mem_mib=(mem or {}).get(label, [1.0 * n] * len(ns))[ns.index(n)])
            row["pass"] = pass_name
            rows.append(row)
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


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


def test_published_lra_table2_loads_with_its_citation():
    assert "lra_table2" in published_names()
    table = load_published("lra_table2")
    assert "2011.04006" in table.citation and table.pass_name == "forward_backward"
    assert table.baseline_variant == "softmax"
    assert len(table.models()) == 9 and len(table.frame) == 36
    f = table.frame.set_index(["variant", "seq_len"])
    assert f.loc[("softmax", 4096), "steps_per_s"] == 1.4 and f.loc[("softmax", 4096), "memory_gb"] == 9.48
    assert f.loc[("performer", 4096), "steps_per_s"] == 8.0
    assert f.loc[("performer", 4096), "relative_speed"] == pytest.approx(8.0 / 1.4, abs=1e-3)
    assert f.loc[("linformer", 4096), "memory_gb"] == 0.99
    assert f.loc[("reformer", 1024), "steps_per_s"] == 4.4
    # relative speed is steps/s over the Transformer's, and agrees with the paper's brackets
    for (variant, n), r in f.iterrows():
        base = f.loc[("softmax", n), "steps_per_s"]
        assert r["relative_speed"] == pytest.approx(r["steps_per_s"] / base, abs=1e-3)
        assert abs(r["printed_speedup"] - r["relative_speed"]) <= 0.06, (variant, n)
    with pytest.raises(ValueError, match="known: lra_table2"):
        load_published("lra_table3")


def test_spearman_against_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d² = 0 + 1 + 1 + 0 + 0 -> 1 - 6·2 / (5·24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    # ties get average ranks (scipy agrees)
    from scipy.stats import spearmanr

    x, y = [1, 2, 2, 3, 5, 4], [2, 1, 4, 4, 6, 5]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1], [2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_published_correlation_at_4k():
    table = load_published("lra_table2")
    lra = table.frame[table.frame["seq_len"] == 4096].set_index("variant")["steps_per_s"]
    ns = [1024, 2048, 3072, 4096]
    # a run whose times are LRA's (1 / steps/s) at every N ranks exactly like LRA: rho = 1
    pub = table.frame.set_index(["variant", "seq_len"])["steps_per_s"]
    times = {v: [1000 / pub[(v, n)] for n in ns] for v in lra.index}
    frame = frame_of(times, ns=ns)
    agreement = published_correlation(frame, table)
    assert agreement.seq_len == 4096 and agreement.models == 9 and agreement.rho == pytest.approx(1.0)
    assert set(agreement.pairs["label"]) == set(lra.index)
    # reverse the ranking of the measured speeds: rho = -1 (ties in LRA's row aside)
    rev = {v: [1.0 / t for t in ts] for v, ts in times.items()}
    assert published_correlation(frame_of(rev, ns=ns), table).rho < -0.95
    # only some models, labelled differently: matched through the variant column
    some = frame_of({"base": times["softmax"], "lin": times["linear"], "perf": times["performer"]}, ns=ns,
                    variants={"base": "softmax", "lin": "linear", "perf": "performer"})
    agreement = published_correlation(some, table)
    assert agreement.models == 3 and list(agreement.pairs["label"]) == ["base", "lin", "perf"]
    # without the baseline model, or with the wrong pass, there is nothing to correlate
    assert published_correlation(frame_of({"linear": times["linear"]}, ns=ns), table) is None
    assert published_correlation(frame_of(times, ns=ns, pass_name="forward"), table) is None
    # the largest common N when 4K was not measured
    short = frame_of({v: ts[:2] for v, ts in times.items()}, ns=ns[:2])
    assert published_correlation(short, table).seq_len == 2048


def test_side_by_side_relative_figures():
    table = load_published("lra_table2")
    ns = [1024, 4096]
    frame = frame_of({"softmax": [10.0, 100.0], "linear": [5.0, 10.0]}, ns=ns,
                     mem={"softmax": [100.0, 1000.0], "linear": [50.0, 100.0]})
    both = published_side_by_side(frame, table).set_index(["label", "seq_len"])
    assert both.loc[("linear", 4096), "measured_speedup"] == pytest.approx(10.0)
    assert both.loc[("linear", 4096), "published_speedup"] == pytest.approx(7.8 / 1.4, abs=1e-3)
    assert both.loc[("linear", 4096), "measured_mem_ratio"] == pytest.approx(0.1)
    assert both.loc[("linear", 4096), "published_mem_ratio"] == pytest.approx(1.03 / 9.48)
    assert both.loc[("softmax", 1024), "measured_speedup"] == pytest.approx(1.0)


def test_quartiles_from_raw_samples():
    frame = frame_of({"softmax": [2.0]}, ns=[256])
    records = [{"case_id": "softmax|N=256", "passes": [
        {"pass": "forward_backward", "status": "ok", "samples_ms": [1.0, 2.0, 3.0, 4.0, 5.0]}]}]
    out = add_quartiles(frame, records)
    assert out["q1_ms"].iloc[0] == pytest.approx(2.0) and out["q3_ms"].iloc[0] == pytest.approx(4.0)
    assert math.isnan(add_quartiles(frame, [])["q1_ms"].iloc[0])


def test_upper_half_exponent_ignores_fixed_overheads_at_small_n():
    # a fixed 5 ms overhead plus a quadratic term: the whole-range fit is flattened,
    # the upper half (N = 1024..4096) is close to 2
    times = {"softmax": [5 + (n / 256) ** 2 for n in NS], "linear": [5 + n / 256 for n in NS]}
    s = scaling_summary(frame_of(times), None, "forward_backward").set_index("label")
    assert s.loc["softmax", "time_exponent"] < 1.5 and s.loc["softmax", "time_exponent_top"] > 1.75
    assert s.loc["softmax", "crossover"] == "-" and s.loc["linear", "crossover"] == "-"  # no baseline

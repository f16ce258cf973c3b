"""Turning results into comparisons: relative speed and memory against a
baseline, in the layout of the papers' efficiency tables; scaling exponents and
crossovers; and the before/after comparison of two runs with a significance
test. The published tables and the agreement with them are in published.py
(their names are still importable from here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# The columns that make two rows the same experiment apart from the variant.
SETTING = ["batch", "dim", "dtype", "device", "causal"]
CASE_KEYS = SETTING + ["heads", "seq_len", "pass"]


def settings_groups(frame: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Split a results frame by setting (batch, dim, dtype, device, causal)."""
    if frame.empty:
        return []
    out = []
    for key, group in frame.groupby(SETTING, sort=True, dropna=False):
        out.append((dict(zip(SETTING, key, strict=True)), group))
    return out


def table_groups(frame: pd.DataFrame) -> list[tuple[dict, int, pd.DataFrame]]:
    """One group per table: (setting, heads, rows), settings as ``settings_groups``."""
    return [(setting, heads, group[group["heads"] == heads])
            for setting, group in settings_groups(frame)
            for heads in sorted(set(group["heads"]))]


def describe_setting(setting: dict) -> str:
    causal = ", causal" if setting.get("causal") else ""
    return f"batch {setting['batch']}, dim {setting['dim']}, {setting['dtype']}, {setting['device']}{causal}"


def label_order(frame: pd.DataFrame) -> list[str]:
    """Variants in the order they first appear (the suite's order)."""
    return list(dict.fromkeys(frame["label"]))


def with_baseline(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Add, to every row, the baseline's median and peak memory of the same
    case and pass, the speed-up (baseline time / time) and the memory ratio."""
    if baseline not in set(frame["label"]):
        known = ", ".join(label_order(frame))
        raise ValueError(f"baseline {baseline!r} is not in this run; its variants: {known}")
    base = frame[(frame["label"] == baseline) & (frame["status"] == "ok")][
        CASE_KEYS + ["median_ms", "peak_mem_mib"]].rename(
        columns={"median_ms": "baseline_ms", "peak_mem_mib": "baseline_mem_mib"})
    merged = frame.merge(base, on=CASE_KEYS, how="left")
    ok = merged["status"] == "ok"
    merged["speedup"] = (merged["baseline_ms"] / merged["median_ms"]).where(ok)
    merged["mem_ratio"] = (merged["peak_mem_mib"] / merged["baseline_mem_mib"]).where(ok)
    return merged


def default_baseline(frame: pd.DataFrame, preferred: str | None = None) -> str | None:
    labels = label_order(frame)
    for candidate in (preferred, "softmax", "sdpa"):
        if candidate and candidate in labels:
            return candidate
    return labels[0] if labels else None


# --- scaling exponents and crossovers -------------------------------------------

@dataclass(frozen=True)
class PowerFit:
    """``value ≈ exp(intercept) · N^exponent``, fitted by least squares on log-log."""

    exponent: float
    intercept: float
    r2: float  # NaN with two points (the fit is exact, R² says nothing)
    points: int

    def predict(self, n: float) -> float:
        return math.exp(self.intercept + self.exponent * math.log(n))


def fit_power_law(ns: Sequence[float], values: Sequence[float]) -> PowerFit | None:
    """The slope of log(value) on log(N), with its R². Points with a missing or
    non-positive value are left out; fewer than two distinct N give None."""
    pts = [(float(n), float(v)) for n, v in zip(ns, values, strict=True)
           if n is not None and v is not None and not _isnan(v) and not _isnan(n) and n > 0 and v > 0]
    if len({n for n, _ in pts}) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([v for _, v in pts])
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    if len(pts) < 3:
        r2 = float("nan")
    else:
        ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
        ss_tot = float(((y - ym) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return PowerFit(exponent=slope, intercept=intercept, r2=r2, points=len(pts))


@dataclass(frozen=True)
class Crossover:
    """Where a variant overtakes the baseline (becomes faster and stays faster to
    the end of the measured range).

    ``kind``: ``"at"`` (``n`` interpolated in log-log between the two measured N
    around the change of sign), ``"below"`` (already faster at the smallest N
    measured), ``"never"`` (not faster at the largest N measured; ``extrapolated``
    is where the fitted power laws would cross, when they do, beyond the range),
    ``"n/a"`` (the baseline itself, or fewer than two common N)."""

    kind: str
    n: float | None = None
    lo: float | None = None  # the measured range
    hi: float | None = None
    extrapolated: float | None = None

    def __str__(self) -> str:
        if self.kind == "at":
            return f"{self.n:,.0f}"
        if self.kind == "below":
            return f"below the range (< {self.lo:,.0f})"
        if self.kind == "never":
            text = f"never (≤ {self.hi:,.0f})"
            if self.extrapolated is not None:
                text += f", ≈{self.extrapolated:,.0f} extrapolated"
            return text
        return "—"


def crossover(ns: Sequence[float], times: Sequence[float], base_times: Sequence[float]) -> Crossover:
    """The N where ``times`` drops below ``base_times`` for good, interpolated
    linearly in log N against log(time / baseline time). Points where either is
    missing are left out."""
    pts = sorted((float(n), float(t), float(b)) for n, t, b in zip(ns, times, base_times, strict=True)
                 if not _isnan(t) and not _isnan(b) and t > 0 and b > 0)
    if len(pts) < 2:
        return Crossover("n/a")
    lo, hi = pts[0][0], pts[-1][0]
    gap = [math.log(t / b) for _, t, b in pts]  # < 0: faster than the baseline
    slower = [i for i, g in enumerate(gap) if g >= 0]
    if not slower:
        return Crossover("below", lo=lo, hi=hi)
    last = slower[-1]
    if last == len(pts) - 1:
        fit_v = fit_power_law([p[0] for p in pts], [p[1] for p in pts])
        fit_b = fit_power_law([p[0] for p in pts], [p[2] for p in pts])
        extrapolated = None
        if fit_v and fit_b and fit_v.exponent < fit_b.exponent:
            log_n = (fit_v.intercept - fit_b.intercept) / (fit_b.exponent - fit_v.exponent)
            if log_n > math.log(hi) and log_n < 60:
                extrapolated = math.exp(log_n)
        return Crossover("never", lo=lo, hi=hi, extrapolated=extrapolated)
    (n0, _, _), (n1, _, _) = pts[last], pts[last + 1]
    g0, g1 = gap[last], gap[last + 1]
    frac = g0 / (g0 - g1)  # g0 >= 0 > g1
    n = math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
    return Crossover("at", n=n, lo=lo, hi=hi)


def scaling_summary(frame: pd.DataFrame, baseline: str | None, pass_name: str) -> pd.DataFrame:
    """Per setting, head count and variant, for one pass: the scaling exponent of
    the median time and of peak memory in N (with R²), the time exponent over
    the upper half of the N measured (``time_exponent_top``), and the crossover
    N where the variant overtakes ``baseline``."""
    columns = SETTING + ["heads", "label", "points", "time_exponent", "time_r2", "time_exponent_top",
                         "mem_exponent", "mem_r2", "crossover", "crossover_kind", "crossover_n"]
    rows: list[dict[str, Any]] = []
    data = frame[(frame["pass"] == pass_name) & (frame["status"] == "ok")]
    for setting, heads, sub in table_groups(data):
        base = sub[sub["label"] == baseline].set_index("seq_len") if baseline else None
        for label in label_order(sub):
            own = sub[sub["label"] == label].sort_values("seq_len")
            tfit = fit_power_law(list(own["seq_len"]), list(own["median_ms"]))
            # Small N carry fixed overheads (projections, launches) that flatten the fit: the
            # exponent over the upper half of the range is closer to the asymptotic one.
            top = own.tail(max(2, (len(own) + 1) // 2))
            tfit_top = fit_power_law(list(top["seq_len"]), list(top["median_ms"]))
            mfit = fit_power_law(list(own["seq_len"]), list(own["peak_mem_mib"]))
            if base is None or base.empty or label == baseline:
                cross = Crossover("n/a")
            else:
                common = [n for n in own["seq_len"] if n in base.index]
                own_t = own.set_index("seq_len")["median_ms"]
                cross = crossover(common, [own_t[n] for n in common],
                                  [base.loc[n, "median_ms"] for n in common])
            rows.append({**setting, "heads": heads, "label": label, "points": len(own),
                         "time_exponent": tfit.exponent if tfit else math.nan,
                         "time_r2": tfit.r2 if tfit else math.nan,
                         "time_exponent_top": tfit_top.exponent if tfit_top else math.nan,
                         "mem_exponent": mfit.exponent if mfit else math.nan,
                         "mem_r2": mfit.r2 if mfit else math.nan,
                         "crossover": str(cross), "crossover_kind": cross.kind,
                         "crossover_n": cross.n if cross.kind == "at" else math.nan})
    return pd.DataFrame(rows, columns=columns)


# --- quartiles from the raw samples (for bands in plots) ---------------------------

def add_quartiles(frame: pd.DataFrame, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Add q1_ms and q3_ms from each pass's raw samples (NaN where there are none)."""
    from attnbench.bench.timing import quartiles

    q: dict[tuple[str, str], tuple[float, float]] = {}
    for record in records:
        for p in record.get("passes", []):
            samples = p.get("samples_ms") or []
            if p.get("status") == "ok" and samples:
                q1, _, q3 = quartiles(list(samples))
                q[(record["case_id"], p["pass"])] = (q1, q3)
    out = frame.copy()
    keys = list(zip(out["case_id"], out["pass"], strict=True))
    out["q1_ms"] = [q.get(k, (math.nan, math.nan))[0] for k in keys]
    out["q3_ms"] = [q.get(k, (math.nan, math.nan))[1] for k in keys]
    return out


# --- two runs: before / after --------------------------------------------------------

# Significance of a change between two runs. With alpha 0.05, one case in twenty
# of an A/A comparison would be flagged by chance alone; 0.01 keeps two runs of
# the same code clean (simulated: under 1.5% flagged at any noise level and
# sample count), and still finds a 2x change with five samples a side.
MIN_EFFECT = 0.05  # a change smaller than 5% is never called significant
ALPHA = 0.01  # Mann-Whitney U, two-sided
MARK_SLOWER, MARK_FASTER, MARK_SAME, MARK_FAILED = "+", "-", "~", "x"
COMPARE_COLUMNS = ["mark", "label", "seq_len", "heads", "pass", "batch", "dim", "dtype", "device", "causal",
                   "status_a", "status_b", "n_a", "n_b", "median_a_ms", "median_b_ms", "ratio", "p_value",
                   "significant", "case_id"]


@dataclass(frozen=True)
class Change:
    ratio: float  # median B / median A
    p_value: float  # NaN when no test is possible
    significant: bool

    @property
    def mark(self) -> str:
        if not self.significant:
            return MARK_SAME
        return MARK_SLOWER if self.ratio > 1 else MARK_FASTER


def change(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA, min_effect: float = MIN_EFFECT) -> Change:
    """Is B's timing different from A's? The ratio of medians B/A, with a
    two-sided Mann-Whitney U test on the raw samples. A change is significant
    only when p < ``alpha`` *and* the ratio is outside [1/(1+min_effect),
    1+min_effect] *and* each side has at least two samples: one sample says
    nothing about spread, so it is never called significant."""
    import statistics

    if not a or not b:
        raise ValueError("change: both sides need at least one sample")
    ratio = statistics.median(b) / statistics.median(a)
    if len(a) < 2 or len(b) < 2:
        return Change(ratio, math.nan, False)
    from scipy.stats import mannwhitneyu

    if len(set(a)) == 1 and set(a) == set(b):
        p = 1.0
    else:
        p = float(mannwhitneyu(list(a), list(b), alternative="two-sided").pvalue)
    big = ratio >= 1 + min_effect or ratio <= 1 / (1 + min_effect)
    return Change(ratio, p, bool(p < alpha and big))


def _pass_samples(records: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[dict, dict]]:
    out = {}
    for record in records:
        passes = {p["pass"]: p for p in record.get("passes", [])}
        for name in record["case"]["passes"]:
            out[(record["case_id"], name)] = (record, passes.get(name, {"status": record.get("status", "error")}))
    return out


def compare_runs(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]], alpha: float = ALPHA,
                 min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """One row per case and pass found in either run: the ratio of medians B/A,
    the Mann-Whitney p-value, and an asv-style mark: ``+`` significantly slower,
    ``-`` significantly faster, ``~`` no significant change, ``x`` failed or
    missing in either run. Cases are matched by case id (label, N, heads, dim,
    batch, dtype, device, causal) and pass."""
    import statistics

    sa, sb = _pass_samples(records_a), _pass_samples(records_b)
    rows = []
    for key in list(dict.fromkeys([*sa, *sb])):
        (rec_a, pa), (rec_b, pb) = sa.get(key, (None, None)), sb.get(key, (None, None))
        case = (rec_a or rec_b)["case"]
        status_a = pa["status"] if pa else "missing"
        status_b = pb["status"] if pb else "missing"
        xs = list(pa.get("samples_ms") or []) if status_a == "ok" else []
        ys = list(pb.get("samples_ms") or []) if status_b == "ok" else []
        row = {"label": case["label"], "seq_len": case["seq_len"], "heads": case["heads"], "pass": key[1],
               "batch": case["batch"], "dim": case["dim"], "dtype": case["dtype"], "device": case["device"],
               "causal": case["causal"], "status_a": status_a, "status_b": status_b, "n_a": len(xs),
               "n_b": len(ys), "median_a_ms": statistics.median(xs) if xs else math.nan,
               "median_b_ms": statistics.median(ys) if ys else math.nan, "case_id": key[0]}
        if xs and ys:
            c = change(xs, ys, alpha=alpha, min_effect=min_effect)
            row.update(ratio=c.ratio, p_value=c.p_value, significant=c.significant, mark=c.mark)
        else:
            row.update(ratio=math.nan, p_value=math.nan, significant=False, mark=MARK_FAILED)
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def compare_summary(compared: pd.DataFrame) -> pd.DataFrame:
    """Per variant (label) and pass: the geometric mean of the ratios B/A over the
    cases measured in both runs, and how many cases got each mark."""
    rows = []
    for (label, pass_name), group in compared.groupby(["label", "pass"], sort=False):
        ok = group[group["mark"] != MARK_FAILED]["ratio"]
        rows.append({"label": label, "pass": pass_name, "cases": len(group),
                     "geomean_ratio": float(np.exp(np.log(ok).mean())) if len(ok) else math.nan,
                     "slower": int((group["mark"] == MARK_SLOWER).sum()),
                     "faster": int((group["mark"] == MARK_FASTER).sum()),
                     "same": int((group["mark"] == MARK_SAME).sum()),
                     "failed": int((group["mark"] == MARK_FAILED).sum())})
    return pd.DataFrame(rows, columns=["label", "pass", "cases", "geomean_ratio", "slower", "faster", "same",
                                       "failed"])


def regressions(compared: pd.DataFrame, fail_above: float) -> pd.DataFrame:
    """The significant slowdowns whose ratio B/A exceeds ``fail_above``."""
    return compared[(compared["mark"] == MARK_SLOWER) & (compared["ratio"] > fail_above)]


def _isnan(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


_PUBLISHED_NAMES = ("DATA_PACKAGE", "DATA_DIR", "PublishedTable", "published_names", "load_published", "spearman",
                    "Agreement", "published_side_by_side", "published_correlation", "alternative_choices")


def __getattr__(name: str) -> Any:
    """The published-table names, moved to published.py, still importable from here."""
    if name in _PUBLISHED_NAMES:
        from attnbench import published

        return getattr(published, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""How each variant grows with N: power laws fitted on log-log (all N and the
larger half), and the crossover N where a variant overtakes the baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attnbench.analysis.baseline import check_pairable, label_order, table_groups
from attnbench.model import SETTING, Status


def _isnan(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


# A fit is poor when the points scatter about the power law: R² under FIT_R2_MIN
# *and* residuals over FIT_RESIDUAL_MAX (standard deviation of the log
# residuals). Both, because a flat series (a decode step constant in N) has a
# low R² with tiny residuals, and a steep one a high R² with large ones. On a
# quiet machine a power law over N 256-4096 leaves residuals of a few percent
# (R² > 0.98); a busy one gave R² 0.01-0.32 and residuals of 50-150%.
FIT_R2_MIN, FIT_RESIDUAL_MAX = 0.9, 0.10


@dataclass(frozen=True)
class PowerFit:
    """``value ≈ exp(intercept) · N^exponent``, fitted by least squares on log-log."""

    exponent: float
    intercept: float
    r2: float  # NaN with two points (the fit is exact, R² says nothing)
    points: int
    residual_sd: float = math.nan  # of the log residuals; NaN with two points

    @property
    def poor(self) -> bool:
        """The points scatter about the line (see FIT_R2_MIN): no exponent is claimed."""
        return self.points >= 3 and self.r2 < FIT_R2_MIN and self.residual_sd > FIT_RESIDUAL_MAX

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
        r2 = residual_sd = float("nan")
    else:
        ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
        ss_tot = float(((y - ym) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
        residual_sd = math.sqrt(ss_res / (len(pts) - 2))
    return PowerFit(exponent=slope, intercept=intercept, r2=r2, points=len(pts), residual_sd=residual_sd)


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
        return "-"


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
                         "mem_exponent", "mem_r2", "crossover", "crossover_kind", "crossover_n",
                         "time_fit_poor", "mem_fit_poor", "crossover_poor"]
    rows: list[dict[str, Any]] = []
    data = frame[(frame["pass"] == pass_name) & (frame["status"] == Status.OK)]
    if baseline:
        check_pairable(data)
    for setting, heads, sub in table_groups(data):
        base = sub[sub["label"] == baseline].set_index("seq_len") if baseline else None
        base_fit = fit_power_law(list(base.index), list(base["median_ms"])) if base is not None and len(base) else None
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
                         "crossover_n": cross.n if cross.kind == "at" else math.nan,
                         # the top fit has too few points to judge: it follows the whole range's
                         "time_fit_poor": bool(tfit and tfit.poor), "mem_fit_poor": bool(mfit and mfit.poor),
                         "crossover_poor": cross.kind != "n/a" and bool((tfit and tfit.poor)
                                                                         or (base_fit and base_fit.poor))})
    return pd.DataFrame(rows, columns=columns)


# --- quartiles from the raw samples (for bands in plots) ---------------------------

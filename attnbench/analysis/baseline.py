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

from attnbench.errors import DataError
from attnbench.model import Status
from attnbench.stats import between_runs
from attnbench.stats.samples import (  # noqa: F401 - ALPHA, MIN_EFFECT, change: re-exported for callers of analysis
    ALPHA,
    MARK_FAILED,
    MARK_FASTER,
    MARK_SAME,
    MARK_SLOWER,
    MIN_EFFECT,
    Change,
    change,
    quartiles,
)
from attnbench.store import visits
from attnbench.store.published import PublishedTable, load_published, published_names  # noqa: F401 - re-exported
from attnbench.store.visits import MARK_UNDECIDED

# The interval bounds with_baseline adds from the rounds.
PAIRED_COLUMNS = ["speedup_low", "speedup_high", "mem_ratio_low", "mem_ratio_high"]
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


def with_baseline(frame: pd.DataFrame, baseline: str, records: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Add, to every row, the baseline's median and peak memory of the same
    case and pass, the speed-up (baseline time / time) and the memory ratio.
    With the run's case ``records``, the speed-up and memory ratio are the
    paired ones (``visits.paired_table``: from visits of the same round) with
    their 95% intervals (``speedup_low``/``_high``, ``mem_ratio_low``/``_high``)."""
    if baseline not in set(frame["label"]):
        known = ", ".join(label_order(frame))
        raise DataError(f"baseline {baseline!r} is not in this run; its variants: {known}")
    check_pairable(frame)
    base = frame[(frame["label"] == baseline) & (frame["status"] == Status.OK)][
        CASE_KEYS + ["median_ms", "peak_mem_mib"]].rename(
        columns={"median_ms": "baseline_ms", "peak_mem_mib": "baseline_mem_mib"})
    merged = frame.merge(base, on=CASE_KEYS, how="left")
    ok = merged["status"] == Status.OK
    merged["speedup"] = (merged["baseline_ms"] / merged["median_ms"]).where(ok)
    merged["mem_ratio"] = (merged["peak_mem_mib"] / merged["baseline_mem_mib"]).where(ok)
    for column in PAIRED_COLUMNS:
        merged[column] = math.nan
    merged["speedup_method"] = None
    if records is None or merged.empty:
        return merged
    table = visits.paired_table(records, baseline)
    if table.empty:
        return merged
    keys = ["label", *CASE_KEYS]
    table = table.set_index(keys)
    index = pd.MultiIndex.from_frame(merged[keys])
    found = index.isin(table.index)
    rows = table.reindex(index[found])
    for column in ("speedup", "mem_ratio", *PAIRED_COLUMNS, "speedup_method"):
        values = rows[column].to_numpy()
        if column in ("speedup", "mem_ratio"):  # keep the unpaired figure where the pairing has none
            keep = pd.isna(values)
            values = [old if k else v for old, v, k in zip(merged.loc[found, column], values, keep, strict=True)]
        merged.loc[found, column] = values
    return merged


class MixedDevicesError(DataError):
    """Figures to be paired (variants at one setting) come from different device models."""


def device_models(frame: pd.DataFrame) -> pd.Series:
    """The device model of each row: ``device_model`` (GPU name, CPU model),
    else ``device_name`` for results written before that column existed."""
    model = frame["device_model"] if "device_model" in frame.columns else pd.Series(None, index=frame.index)
    if "device_name" in frame.columns:
        model = model.where(model.notna(), frame["device_name"])
    return model


def check_pairable(frame: pd.DataFrame) -> None:
    """Refuse to pair variants measured on different device models at one
    setting (a run merged from machines with different GPUs, or resumed on
    another machine): their ratios would compare the devices, not the variants."""
    if frame.empty:
        return
    data = frame.assign(_model=device_models(frame))
    data = data[data["_model"].notna()]
    keys = [k for k in CASE_KEYS if k != "pass"]
    problems = []
    for key, group in data.groupby(keys, sort=True, dropna=False):
        models = list(dict.fromkeys(group["_model"]))
        if len(models) > 1:
            setting = dict(zip(keys, key, strict=True))
            where = "; ".join(
                f"{model}: {', '.join(dict.fromkeys(group.loc[group['_model'] == model, 'label']))}"
                for model in models)
            problems.append(f"N={setting['seq_len']}, {setting['heads']} heads, {describe_setting(setting)} — {where}")
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise MixedDevicesError(
            "cannot compare variants measured on different device models (the ratios would compare the "
            "devices):\n  " + "\n  ".join(shown) + "\nThe run mixes machines (merged shards or a resume "
            "elsewhere): report each device's part on its own, or run those settings again on one device model.")


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
                         "mem_exponent", "mem_r2", "crossover", "crossover_kind", "crossover_n"]
    rows: list[dict[str, Any]] = []
    data = frame[(frame["pass"] == pass_name) & (frame["status"] == Status.OK)]
    if baseline:
        check_pairable(data)
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
    q: dict[tuple[str, str], tuple[float, float]] = {}
    for record in records:
        for p in record.get("passes", []):
            samples = p.get("samples_ms") or []
            if p.get("status") == Status.OK and samples:
                q1, _, q3 = quartiles(list(samples))
                q[(record["case_id"], p["pass"])] = (q1, q3)
    out = frame.copy()
    keys = list(zip(out["case_id"], out["pass"], strict=True))
    out["q1_ms"] = [q.get(k, (math.nan, math.nan))[0] for k in keys]
    out["q3_ms"] = [q.get(k, (math.nan, math.nan))[1] for k in keys]
    return out


# --- two runs: before / after --------------------------------------------------------
#
# The visit (one case measured in one round) is the unit: see attnbench.stats.paired
# for the test and why, attnbench.store.visits for the rows.

COMPARE_COLUMNS = visits.COMPARE_COLUMNS


def compare_run_visits(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
                       min_effect: float = between_runs.MIN_EFFECT, level: float = between_runs.COMPARE_LEVEL
                       ) -> tuple[pd.DataFrame, between_runs.CommonShift | None]:
    """Run B against run A (case records, visits merged): one row per case and
    pass found in either run, with the ratio of visit medians B/A, its interval
    beyond the runs' common drift, and an asv-style mark: ``+`` slower, ``-``
    faster, ``~`` no change beyond ``min_effect``, ``?`` too few rounds for a
    verdict, ``x`` failed or missing in either run; and the shift common to all
    cases. Cases are matched by case id (label, N, heads, dim, batch, dtype,
    device, causal) and pass."""
    return visits.compare_records(records_a, records_b, level=level, min_effect=min_effect)


def compare_runs(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
                 min_effect: float = between_runs.MIN_EFFECT,
                 level: float = between_runs.COMPARE_LEVEL) -> pd.DataFrame:
    """The rows of ``compare_run_visits``, without the common shift."""
    return compare_run_visits(records_a, records_b, min_effect, level)[0]


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
                     "undecided": int((group["mark"] == MARK_UNDECIDED).sum()),
                     "failed": int((group["mark"] == MARK_FAILED).sum())})
    return pd.DataFrame(rows, columns=["label", "pass", "cases", "geomean_ratio", "slower", "faster", "same",
                                       "undecided", "failed"])


def regressions(compared: pd.DataFrame, fail_above: float) -> pd.DataFrame:
    """The significant slowdowns whose ratio B/A exceeds ``fail_above``."""
    return compared[(compared["mark"] == MARK_SLOWER) & (compared["ratio"] > fail_above)]


def moved_settings(compared: pd.DataFrame) -> list[str]:
    """One line per setting group (and pass) whose variants moved together
    between the runs beyond the other settings (``setting_moved``)."""
    lines = []
    keys = ["seq_len", "heads", "pass", "batch", "dim", "dtype", "device", "causal"]
    for key, group in compared[compared["setting_moved"].fillna(False).astype(bool)].groupby(keys, sort=False):
        n, heads, pass_name = key[:3]
        lines.append(f"N={n} H={heads} {pass_name}: {len(group)} variants, B/A {group['setting_shift'].iloc[0]:.3f}")
    return lines


def _isnan(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def lost_cases(compared: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``compare_runs`` measured in run A (ok) but missing or failed in
    run B: a gate cannot pass on them, as nothing was compared."""
    return compared[(compared["status_a"] == Status.OK) & (compared["status_b"] != Status.OK)]


def select_rows(frame: pd.DataFrame, labels: Sequence[str] | None = None, seq_lens: Sequence[int] | None = None,
                pass_name: str | None = None) -> pd.DataFrame:
    """The rows of ``frame`` of the given variants (labels), sequence lengths and
    pass; None keeps all. A label or N the run does not have is an error naming
    what it has."""
    if labels:
        known = label_order(frame)
        unknown = [x for x in labels if x not in known]
        if unknown:
            raise DataError(f"--variant {', '.join(unknown)}: not in this run; its variants: {', '.join(known)}")
        frame = frame[frame["label"].isin(list(labels))]
    if seq_lens:
        known_n = sorted(set(frame["seq_len"]))
        unknown_n = [n for n in seq_lens if n not in known_n]
        if unknown_n:
            raise DataError(f"--n {', '.join(map(str, unknown_n))}: not in this run; its N: "
                            f"{', '.join(map(str, known_n))}")
        frame = frame[frame["seq_len"].isin(list(seq_lens))]
    if pass_name:
        frame = frame[frame["pass"] == pass_name]
    return frame

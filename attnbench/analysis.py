"""Turning results into comparisons: relative speed and memory against a
baseline, in the layout of the papers' efficiency tables; scaling exponents and
crossovers; agreement with a published table; and the before/after comparison
of two runs with a significance test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attnbench import paired, visits
from attnbench.errors import DataError
from attnbench.model import Status
from attnbench.published import PublishedTable, load_published, published_names  # noqa: F401 - re-exported
from attnbench.stats import (  # noqa: F401 - ALPHA, MIN_EFFECT, change: re-exported for callers of analysis
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
from attnbench.visits import MARK_UNDECIDED

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


# --- agreement with a published table --------------------------------------------

def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than
    two pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman: the two sequences differ in length")
    if len(x) < 2:
        return math.nan
    rx = pd.Series(list(x), dtype=float).rank(method="average").to_numpy()
    ry = pd.Series(list(y), dtype=float).rank(method="average").to_numpy()
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


@dataclass
class Agreement:
    """How a run's relative speeds rank against a published table's at one N."""

    table: str
    pass_name: str
    seq_len: int
    rho: float
    pairs: pd.DataFrame  # model, label, measured (speed-up), published (relative speed)

    @property
    def models(self) -> int:
        return len(self.pairs)


def _published_group(frame: pd.DataFrame, table: PublishedTable, pass_name: str
                     ) -> tuple[pd.DataFrame, dict[str, str], str] | None:
    """The run's rows (one setting and head count, the one that pairs the most
    models) to set beside ``table``: (rows of that pass, table variant -> label,
    the label of the table's baseline)."""
    base_variant = table.baseline_variant
    data = frame[(frame["pass"] == pass_name) & (frame["status"] == Status.OK)]
    if data.empty or base_variant is None:
        return None
    best = None
    for _setting, _heads, sub in table_groups(data):
        mapping = _map_models(table, sub, label_order(sub))
        if base_variant not in mapping:
            continue
        if best is None or len(mapping) > len(best[1]):
            best = (sub, mapping, mapping[base_variant])
    return best


def published_side_by_side(frame: pd.DataFrame, table: PublishedTable, pass_name: str | None = None
                           ) -> pd.DataFrame:
    """Measured and published relative figures of the models both have, at the N
    both have: speed-up against the baseline model's variant and memory ratio
    (peak / the baseline's peak), one row per model and N."""
    columns = ["model", "label", "seq_len", "measured_speedup", "published_speedup", "measured_mem_ratio",
               "published_mem_ratio", "case_id", "baseline_case_id"]
    found = _published_group(frame, table, pass_name or table.pass_name)
    if found is None:
        return pd.DataFrame(columns=columns)
    sub, mapping, base_label = found
    pub = table.frame
    base_model = table.meta.get("baseline_model")
    rows = []
    for n in sorted(set(sub["seq_len"]) & set(int(x) for x in pub["seq_len"])):
        at_n = sub[sub["seq_len"] == n].set_index("label")
        pub_n = pub[pub["seq_len"] == n].set_index("variant")
        pub_base = pub[(pub["seq_len"] == n) & (pub["model"] == base_model)]
        base_gb = float(pub_base["memory_gb"].iloc[0]) if not pub_base.empty else math.nan
        for variant, label in mapping.items():
            if label not in at_n.index or variant not in pub_n.index:
                continue
            has_base = base_label in at_n.index
            mine, base = at_n.loc[label], at_n.loc[base_label] if has_base else None
            rows.append({
                "model": pub_n.loc[variant, "model"], "label": label, "seq_len": int(n),
                "measured_speedup": float(base["median_ms"] / mine["median_ms"]) if has_base else math.nan,
                "published_speedup": float(pub_n.loc[variant, "relative_speed"]),
                "measured_mem_ratio": (float(mine["peak_mem_mib"] / base["peak_mem_mib"])
                                       if has_base and not _isnan(mine["peak_mem_mib"])
                                       and not _isnan(base["peak_mem_mib"]) and base["peak_mem_mib"] > 0
                                       else math.nan),
                "published_mem_ratio": float(pub_n.loc[variant, "memory_gb"]) / base_gb,
                "case_id": mine["case_id"], "baseline_case_id": base["case_id"] if has_base else None,
            })
    return pd.DataFrame(rows, columns=columns)


def published_correlation(frame: pd.DataFrame, table: PublishedTable, seq_len: int | None = 4096,
                          pass_name: str | None = None, both: pd.DataFrame | None = None) -> Agreement | None:
    """Spearman rank correlation between the measured speed-ups (against the run's
    variant that maps to the table's baseline model) and the table's relative
    speeds, over the models both have, at ``seq_len`` (4096 by default; the
    largest N both have when that one is missing). None when fewer than two
    models can be paired. ``both``: ``published_side_by_side(frame, table, pass_name)``
    when the caller already has it."""
    pass_name = pass_name or table.pass_name
    if both is None:
        both = published_side_by_side(frame, table, pass_name)
    both = both.dropna(subset=["measured_speedup", "published_speedup"])
    if both.empty:
        return None
    ns = sorted(set(both["seq_len"]))
    n = seq_len if seq_len in ns else ns[-1]
    at_n = both[both["seq_len"] == n]
    if len(at_n) < 2:
        return None
    pairs = at_n[["model", "label", "measured_speedup", "published_speedup", "case_id", "baseline_case_id"]].rename(
        columns={"measured_speedup": "measured", "published_speedup": "published"}).reset_index(drop=True)
    return Agreement(table=table.name, pass_name=pass_name, seq_len=int(n),
                     rho=spearman(list(pairs["measured"]), list(pairs["published"])), pairs=pairs)


def _map_models(table: PublishedTable, frame: pd.DataFrame, labels: list[str]) -> dict[str, str]:
    """Table variant -> the run's label: a label equal to the variant name, else
    the only label measuring that variant."""
    out = {}
    for variant in dict.fromkeys(table.frame["variant"]):
        if variant in labels:
            out[variant] = variant
            continue
        same = list(dict.fromkeys(frame[frame["variant"] == variant]["label"]))
        if len(same) == 1:
            out[variant] = same[0]
    return out


def agreement_interval(agreement: Agreement, records: list[dict[str, Any]], level: float = paired.LEVEL
                       ) -> paired.Interval:
    """A bootstrap interval over rounds for ``agreement``'s rank correlation: per
    model its speed-up in each round (the baseline's visit median over the
    model's, same round), rounds resampled alike for every model."""
    by_id = {r["case_id"]: r for r in records}

    def rounds_of(case_id: str) -> dict[int, float]:
        record = by_id.get(case_id) or {}
        result = next((p for p in record.get("passes", []) if p["pass"] == agreement.pass_name), {})
        return {r: float(np.median(s)) for r, s in zip(result.get("round_ids") or [], result.get("rounds_ms") or [],
                                                        strict=True) if s}

    per_model: dict[str, dict[int, float]] = {}
    for pair in agreement.pairs.to_dict("records"):
        mine, base = rounds_of(pair["case_id"]), rounds_of(pair["baseline_case_id"] or "")
        per_model[pair["model"]] = {r: base[r] / mine[r] for r in mine.keys() & base.keys()}
    rounds = sorted(set().union(*per_model.values())) if per_model else []
    measured = {m: [v.get(r, math.nan) for r in rounds] for m, v in per_model.items()}
    published = dict(zip(agreement.pairs["model"], agreement.pairs["published"], strict=True))
    return paired.spearman_interval(measured, published, level)


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
# The visit (one case measured in one round) is the unit: see attnbench.paired
# for the test and why, attnbench.visits for the rows.

COMPARE_COLUMNS = visits.COMPARE_COLUMNS


def compare_run_visits(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
                       min_effect: float = paired.MIN_EFFECT, level: float = paired.COMPARE_LEVEL
                       ) -> tuple[pd.DataFrame, paired.CommonShift | None]:
    """Run B against run A (case records, visits merged): one row per case and
    pass found in either run, with the ratio of visit medians B/A, its interval
    beyond the runs' common drift, and an asv-style mark: ``+`` slower, ``-``
    faster, ``~`` no change beyond ``min_effect``, ``?`` too few rounds for a
    verdict, ``x`` failed or missing in either run; and the shift common to all
    cases. Cases are matched by case id (label, N, heads, dim, batch, dtype,
    device, causal) and pass."""
    return visits.compare_records(records_a, records_b, level=level, min_effect=min_effect)


def compare_runs(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
                 min_effect: float = paired.MIN_EFFECT, level: float = paired.COMPARE_LEVEL) -> pd.DataFrame:
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


def _isnan(value: Any) -> bool:
    try:
        return value is None or value is pd.NA or math.isnan(float(value))
    except (TypeError, ValueError):
        return True

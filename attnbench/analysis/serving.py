"""Serving figures of a run: the decode table (µs per token, tokens/s, the cache or
state, the achieved bandwidth against its bound), how a decode step scales with
N (about 1 for a KV cache, about 0 for a recurrent state), and where each other
mechanism overtakes the KV cache, in time and in memory.

A step's bound: the least bytes it moves (its cache or state, the layer's
weights, the token's vectors; ``step_bytes``) over the run's calibrated copy
bandwidth. ``bandwidth_pct`` (results.csv) is the share of that bound a step
reached: 100% is a step that only moved its bytes at the copy's speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attnbench.model import Status

DECODE = "decode"
#: Mechanisms whose decode reads a KV cache of every token: the reference the others are held against.
KV_CACHE_VARIANTS = ("sdpa", "softmax")
#: What a decode series shares besides N.
SERIES = ["label", "heads", "kv_heads", "dim", "batch", "dtype", "device"]
DECODE_COLUMNS = ["label", "heads", "kv_heads", "batch", "seq_len", "us_per_token", "tokens_per_s", "cache_mib",
                  "bandwidth_gbs", "bandwidth_pct", "noisy"]


def kv_label(label: str, heads: int, kv_heads: int) -> str:
    """A variant's label with its key/value heads when fewer than its query heads."""
    return label if kv_heads == heads else f"{label} kv{kv_heads}"


def with_kv_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with grouped-query cases labelled apart (``sdpa kv2``), so that every
    table and chart, which keys rows by label and heads, keeps them apart."""
    if frame.empty or "kv_heads" not in frame:
        return frame
    if (frame["kv_heads"].isna() | (frame["kv_heads"] == frame["heads"])).all():
        return frame
    out = frame.copy()
    kv = out["kv_heads"].fillna(out["heads"]).astype(int)
    out["label"] = [kv_label(lab, h, k) for lab, h, k in zip(out["label"], out["heads"], kv, strict=True)]
    return out


def measured_decode(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the decode cases that were measured."""
    return frame[(frame["pass"] == DECODE) & (frame["status"] == Status.OK)] if not frame.empty else frame


def decode_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The decode table: one row per measured decode case."""
    rows = measured_decode(frame)
    if rows.empty:
        return pd.DataFrame(columns=DECODE_COLUMNS)
    out = with_kv_labels(rows).assign(us_per_token=rows["median_ms"] * 1e3)
    return out.sort_values(["label", "batch", "seq_len"])[DECODE_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class DecodeScaling:
    """How one series' decode step and cache grow with N: log-log slopes over all its N."""

    label: str
    kv_heads: int
    batch: int
    points: int
    time_exponent: float
    time_r2: float
    cache_exponent: float
    fixed_us: float | None  # at the smallest N: the step's time beyond its bandwidth bound


def _fit(ns: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(slope, R²) of log(values) against log(ns)."""
    x, y = np.log(ns), np.log(values)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    return float(slope), float(1 - (residual ** 2).sum() / total) if total > 0 else 1.0


def decode_scaling(frame: pd.DataFrame) -> list[DecodeScaling]:
    """Per decode series with at least two N: the exponents of its step time and its
    cache in N, and its fixed cost at the smallest N (time beyond the bound)."""
    rows = measured_decode(frame)
    out = []
    for key, group in rows.groupby(SERIES, sort=True, dropna=False):
        group = group.sort_values("seq_len")
        if group["seq_len"].nunique() < 2:
            continue
        ns = group["seq_len"].to_numpy(float)
        time_k, r2 = _fit(ns, group["median_ms"].to_numpy(float))
        cache = group["cache_mib"].to_numpy(float)
        cache_k = _fit(ns, cache)[0] if (cache > 0).all() else math.nan
        first = group.iloc[0]
        fixed = None
        if pd.notna(first.get("bandwidth_pct")) and first["bandwidth_pct"] > 0:
            bound_ms = first["median_ms"] * first["bandwidth_pct"] / 100
            fixed = (first["median_ms"] - bound_ms) * 1e3
        label, heads, kv_heads, _, batch = key[:5]
        out.append(DecodeScaling(kv_label(label, int(heads), int(kv_heads)), int(kv_heads), int(batch), len(group),
                                 time_k, r2, cache_k, fixed))
    return out


@dataclass(frozen=True)
class Crossover:
    """Where ``label``'s decode overtakes the KV cache of ``reference`` (same heads,
    kv_heads, batch): the N at which its step becomes faster and its state smaller.
    ``None`` with ``*_side``: "below" (already at the smallest N measured), "above"
    (not by the largest); an N interpolated in log-log between grid points otherwise."""

    label: str
    reference: str
    kv_heads: int
    batch: int
    time_n: float | None
    time_side: str | None
    memory_n: float | None
    memory_side: str | None


def _crossing(ns: np.ndarray, ratio: np.ndarray) -> tuple[float | None, str | None]:
    """The N where ``ratio`` (variant / reference) first falls below 1 for good."""
    below = ratio < 1
    if below.all():
        return None, "below"
    if not below[-1]:
        return None, "above"
    i = int(np.flatnonzero(~below)[-1])  # the last N where the reference was still ahead
    x0, x1 = math.log(ns[i]), math.log(ns[i + 1])
    y0, y1 = math.log(ratio[i]), math.log(ratio[i + 1])
    return math.exp(x0 + (x1 - x0) * y0 / (y0 - y1)), None


def crossovers(frame: pd.DataFrame) -> list[Crossover]:
    """Per decode series that is not a KV cache: where it overtakes the KV cache of
    the same setting (sdpa, else softmax), in time per token and in cache size."""
    rows = measured_decode(frame)
    if rows.empty:
        return []
    reference = next((v for v in KV_CACHE_VARIANTS if v in set(rows["variant"])), None)
    if reference is None:
        return []
    out = []
    setting = ["heads", "kv_heads", "dim", "batch", "dtype", "device"]
    for key, group in rows.groupby(setting, sort=True, dropna=False):
        ref = group[group["variant"] == reference].drop_duplicates("seq_len").set_index("seq_len")
        if ref.empty:
            continue
        for label, series in group[group["variant"] != reference].groupby("label", sort=True):
            if series["variant"].iloc[0] in KV_CACHE_VARIANTS:
                continue
            series = series.drop_duplicates("seq_len").set_index("seq_len")
            ns = np.array(sorted(set(series.index) & set(ref.index)), dtype=float)
            if len(ns) == 0:
                continue
            t = _crossing(ns, np.array([series.at[n, "median_ms"] / ref.at[n, "median_ms"] for n in ns]))
            m = _crossing(ns, np.array([series.at[n, "cache_mib"] / ref.at[n, "cache_mib"] for n in ns]))
            heads, kv_heads, _, batch = (int(k) for k in key[:4])
            ref_label = kv_label(str(ref["label"].iloc[0]), heads, kv_heads)
            out.append(Crossover(kv_label(str(label), heads, kv_heads), ref_label, kv_heads, batch, *t, *m))
    return out


def crossover_text(n: float | None, side: str | None, ns: tuple[int, int]) -> str:
    """An N, or where it lies outside the N measured."""
    if side == "below":
        return f"< {ns[0]:,}"
    if side == "above":
        return f"> {ns[1]:,}"
    return f"{n:,.0f}" if n is not None else "-"

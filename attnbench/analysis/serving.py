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

from attnbench.analysis.scaling import crossover, fit_power_law
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
        time = fit_power_law(ns, group["median_ms"].to_numpy(float))
        r2 = 1.0 if math.isnan(time.r2) else time.r2  # two points: the line goes through both
        cache = group["cache_mib"].to_numpy(float)
        cache_k = fit_power_law(ns, cache).exponent if (cache > 0).all() else math.nan
        first = group.iloc[0]
        fixed = None
        if pd.notna(first.get("bandwidth_pct")) and first["bandwidth_pct"] > 0:
            bound_ms = first["median_ms"] * first["bandwidth_pct"] / 100
            fixed = (first["median_ms"] - bound_ms) * 1e3
        label, heads, kv_heads, _, batch = key[:5]
        out.append(DecodeScaling(kv_label(label, int(heads), int(kv_heads)), int(kv_heads), int(batch), len(group),
                                 time.exponent, r2, cache_k, fixed))
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


def _crossing(ns: np.ndarray, values: np.ndarray, reference: np.ndarray) -> tuple[float | None, str | None]:
    """Where ``values`` fall below the ``reference`` for good (scaling.crossover): an N,
    or "below" (already at the smallest N), "above" (not by the largest)."""
    found = crossover(ns, values, reference)
    if found.kind == "at":
        return found.n, None
    if found.kind == "n/a":  # one common N: ahead there or not
        return None, "below" if values[0] < reference[0] else "above"
    return None, "below" if found.kind == "below" else "above"


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
            t, m = (_crossing(ns, series.loc[ns, column].to_numpy(float), ref.loc[ns, column].to_numpy(float))
                    for column in ("median_ms", "cache_mib"))
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

"""Turning results into comparisons: relative speed and memory against a
baseline, in the layout of the papers' efficiency tables."""

from __future__ import annotations

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

"""A run's figures against the machine's limits: each case's achieved FLOP/s as
a fraction of the matrix-multiply rate measured at the run's start (a roofline
view: a layer far below the peak at large N is bound by memory traffic or
overheads, not arithmetic), and the warnings a run's calibrations and noise
record raise."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from attnbench.bench.noise import run_warnings
from attnbench.store.results import best_calibrated


def calibrations(meta: dict[str, Any], when: str = "start") -> dict[tuple[str, str], dict[str, Any]]:
    """(device, dtype) -> the run's calibration at its ``start`` or ``end``."""
    found = (meta.get("calibration") or {}).get(when) or []
    return {(c.get("device"), c.get("dtype")): c for c in found if isinstance(c, dict) and not c.get("error")}


def best_rates(meta: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(device, dtype) -> the best matmul rate the run's calibrations (start, between
    rounds, end) measured: what the machine showed it can do."""
    return best_calibrated(meta, "matmul_flops")


def with_peak_fraction(frame: pd.DataFrame, meta: dict[str, Any], best: bool = False) -> pd.DataFrame:
    """Add ``peak_fraction``: achieved FLOP/s (FLOPs over the median time) over
    the matmul rate measured at the run's start on the case's device and dtype
    (``best``: over the best of the run's calibrations, beyond which a
    figure is impossible)."""
    out = frame.copy()
    peaks = best_rates(meta) if best else {k: c.get("matmul_flops") for k, c in calibrations(meta).items()}
    rates = [peaks.get((d, t)) for d, t in zip(out["device"], out["dtype"], strict=True)]
    achieved = pd.to_numeric(out["tflops"], errors="coerce") * 1e12
    out["peak_fraction"] = [a / r if r and not pd.isna(a) else math.nan
                            for a, r in zip(achieved, rates, strict=True)]
    return out


def run_notes(meta: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Warnings from the run's calibrations (drift between start and end) and
    its noise record, as printable lines (those the sweep printed after the run)."""
    return [f"[yellow]warning:[/] {line}" for line in run_warnings(meta, records)]

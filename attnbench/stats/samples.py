"""Statistics of timing samples: quartiles, the spread that flags a noisy
figure, and the summary a results row carries.

Imports nothing else of attnbench: the measurement, the results reader and
the analysis all use it.
"""

from __future__ import annotations

import statistics

NOISY_REL_IQR = 0.10  # a figure whose IQR/median exceeds this is flagged as noisy


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3) with linear interpolation; a single sample has zero spread."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def rel_iqr(samples: list[float]) -> float:
    q1, med, q3 = quartiles(samples)
    return (q3 - q1) / med if med > 0 else 0.0


def summarize(samples: list[float]) -> dict[str, float | int | None]:
    """The statistics the results table carries (all in milliseconds)."""
    if not samples:
        return {"median_ms": None, "iqr_ms": None, "min_ms": None, "mean_ms": None, "std_ms": None,
                "samples": 0}
    q1, med, q3 = quartiles(samples)
    return {
        "median_ms": med,
        "iqr_ms": q3 - q1,
        "min_ms": min(samples),
        "mean_ms": statistics.fmean(samples),
        "std_ms": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "samples": len(samples),
    }

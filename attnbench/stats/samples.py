"""Statistics of timing samples: quartiles, the summary a results row carries,
and whether a change between two runs is significant.

Imports nothing else of attnbench: the measurement, the results reader and
the analysis all use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

NOISY_REL_IQR = 0.10  # a figure whose IQR/median exceeds this is flagged as noisy

# Significance of a change between two runs. With alpha 0.05, one case in twenty
# of an A/A comparison would be flagged by chance alone; 0.01 keeps two runs of
# the same code clean (simulated: under 1.5% flagged at any noise level and
# sample count), and still finds a 2x change with five samples a side.
MIN_EFFECT = 0.05  # a change smaller than 5% is never called significant
ALPHA = 0.01  # Mann-Whitney U, two-sided
MARK_SLOWER, MARK_FASTER, MARK_SAME, MARK_FAILED = "+", "-", "~", "x"


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

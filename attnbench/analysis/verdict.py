"""Can a run's timings be trusted? A verdict from what the run recorded: the
machine's calibration at its start and end, the share of the cores other
processes took, how far each case's visits spread between rounds, and any
figure the machine cannot reach (a roofline above the measured peak).

* ``trustworthy``: every criterion within what quiet runs of this project
  show;
* ``noisy``: some criterion beyond it; the figures stand, with wider
  intervals than a quiet machine gives;
* ``unreliable``: the machine changed or was shared so much (or a figure is
  impossible) that differences between variants may be the machine's;
* ``unjudged``: the run recorded neither calibration nor noise (older runs).

The thresholds and the runs they come from are in docs/statistics.md
("The verdict"): quiet reference runs of the 2-core CPU machine had other
processes at 0.6-1.9% of the cores, calibrations moving by -5% to +14%
between start and end, and a median round spread of 0.09-0.14; runs timed
beside other jobs had 47-56%, +153% to +451% and 1.1.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attnbench.analysis.roofline import calibrations
from attnbench.bench.calibration import FIELDS, format_rate
from attnbench.bench.noise import OTHER_SHARE_WARN
from attnbench.model import Status

TRUSTWORTHY, NOISY, UNRELIABLE, UNJUDGED = "trustworthy", "noisy", "unreliable", "unjudged"
LEVELS = (TRUSTWORTHY, NOISY, UNRELIABLE)  # from best to worst

OTHER_SHARE_NOISY, OTHER_SHARE_UNRELIABLE = OTHER_SHARE_WARN, 0.25
# A calibration figure's change between the run's start and end, as the larger
# of end/start and start/end, less one: 0.2 is 20% faster or slower.
DRIFT_NOISY, DRIFT_UNRELIABLE = 0.20, 1.0
# The median over the run's passes of the spread of visit medians between
# rounds (the standard deviation of their logs: 0.2 is about 20%).
SPREAD_NOISY, SPREAD_UNRELIABLE = 0.20, 0.40
PEAK_FRACTION_MAX = 1.0  # a layer cannot run faster than the measured matmul peak


@dataclass(frozen=True)
class Verdict:
    """``level``: trustworthy, noisy, unreliable or unjudged; ``reasons``: one
    phrase per criterion that set it, with its figure and threshold."""

    level: str
    reasons: list[str] = field(default_factory=list)

    @property
    def unreliable(self) -> bool:
        return self.level == UNRELIABLE

    @property
    def headline(self) -> str:
        """The verdict in one line, as reports print it first."""
        text = {TRUSTWORTHY: "trustworthy: the machine stayed quiet and the rounds agree",
                NOISY: "noisy: the figures stand, with wider intervals than a quiet machine gives",
                UNRELIABLE: "unreliable: differences between variants may be the machine's, not theirs; "
                            "run again on a quiet machine",
                UNJUDGED: "unjudged: the run recorded no calibration or noise to judge it by"}[self.level]
        return f"timings {text}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "reasons": list(self.reasons)}


def _drift(start: float | None, end: float | None) -> float | None:
    if not start or not end or not (math.isfinite(start) and math.isfinite(end)) or start <= 0 or end <= 0:
        return None
    return max(end / start, start / end) - 1


def run_verdict(meta: dict[str, Any], frame: pd.DataFrame, peak_fractions: pd.Series | None = None) -> Verdict:
    """The verdict of a run from its run.json ``meta`` (calibration, noise), its
    tidy rows ``frame`` (round spreads) and the rows' achieved fraction of the
    measured peak (``peak_fractions``, from the roofline)."""
    found: list[tuple[str, str]] = []  # (level, reason)
    noise = meta.get("noise") or {}
    share = noise.get("other_share")
    if share is not None:
        if share > OTHER_SHARE_UNRELIABLE:
            found.append((UNRELIABLE, f"other processes took {share:.0%} of the cores, over "
                                      f"{OTHER_SHARE_UNRELIABLE:.0%}"))
        elif share > OTHER_SHARE_NOISY:
            found.append((NOISY, f"other processes took {share:.0%} of the cores, over {OTHER_SHARE_NOISY:.0%}"))
    starts, ends = calibrations(meta), calibrations(meta, "end")
    for key, start in starts.items():
        end = ends.get(key) or {}
        for name, label in FIELDS.items():
            change = _drift(start.get(name), end.get(name))
            if change is None or change <= DRIFT_NOISY:
                continue
            level, limit = (UNRELIABLE, DRIFT_UNRELIABLE) if change > DRIFT_UNRELIABLE else (NOISY, DRIFT_NOISY)
            found.append((level, f"the {label} moved from {format_rate(name, start[name])} to "
                                 f"{format_rate(name, end[name])} during the run, beyond ±{limit:.0%}"))
    spread = _median_round_spread(frame)
    if spread is not None and spread > SPREAD_NOISY:
        level, limit = (UNRELIABLE, SPREAD_UNRELIABLE) if spread > SPREAD_UNRELIABLE else (NOISY, SPREAD_NOISY)
        found.append((level, f"the visits of a case spread by {spread:.0%} between rounds (median), over "
                             f"{limit:.0%}"))
    if peak_fractions is not None:
        above = pd.to_numeric(peak_fractions, errors="coerce")
        above = above[above > PEAK_FRACTION_MAX]
        if len(above):
            found.append((UNRELIABLE, f"{len(above)} figure(s) faster than the measured matmul peak (up to "
                                      f"{above.max():.0%}): the calibration or the timing was disturbed"))
    if not found:
        judged = share is not None or bool(starts) or spread is not None
        return Verdict(TRUSTWORTHY if judged else UNJUDGED)
    worst = max(LEVELS.index(level) for level, _ in found)
    return Verdict(LEVELS[worst], [reason for level, reason in found if LEVELS.index(level) == worst]
                   + [reason for level, reason in found if LEVELS.index(level) < worst])


def _median_round_spread(frame: pd.DataFrame) -> float | None:
    """The median round spread of the run's measured passes (None with one round)."""
    if frame.empty or "round_spread" not in frame.columns:
        return None
    ok = frame[(frame["status"] == Status.OK)]
    values = [float(v) for v in pd.to_numeric(ok["round_spread"], errors="coerce") if not pd.isna(v)]
    return statistics.median(values) if values else None

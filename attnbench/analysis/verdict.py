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
("The verdict"). In 23 quiet runs of the 2-core CPU VM (nothing else
running) other processes took 0.5-2.1% of the cores and the median round
spread was 0.03-0.19; in the runs timed beside other jobs, 29-66% and
0.57-2.4. The calibrations did not tell the two apart: the VM's own matmul
rate and copy bandwidth moved by up to 90% between a quiet run's start and
end (median 26%, 14 of the 23 beyond 20%), and by 31% to 451% in the busy
runs. So with rounds, the round spread judges the timings, and a
calibration's move is stated beside the verdict; it sets the level only
beyond 100% (the figures held against the measured peak then mean half or
twice as much), or in a run of one round, where the calibrations are the
only witness.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attnbench.analysis.roofline import calibrations
from attnbench.bench.calibration import DRIFT_WARN, FIELDS, drift, format_rate
from attnbench.bench.noise import OTHER_SHARE_WARN
from attnbench.model import Status

TRUSTWORTHY, NOISY, UNRELIABLE, UNJUDGED = "trustworthy", "noisy", "unreliable", "unjudged"
LEVELS = (TRUSTWORTHY, NOISY, UNRELIABLE)  # from best to worst

OTHER_SHARE_NOISY, OTHER_SHARE_UNRELIABLE = OTHER_SHARE_WARN, 0.25
# A calibration figure's change between the run's start and end, as the larger
# of end/start and start/end, less one: 0.2 is 20% faster or slower. Beyond
# DRIFT_NOISY it is said; it sets the level (noisy, unreliable beyond
# DRIFT_UNRELIABLE) in a run of one round, with nothing else to judge by. With
# rounds it sets noisy only beyond DRIFT_NOISY_WITH_ROUNDS: quiet runs of the
# VM moved by up to 90% and their rounds still agreed (their A/A compare clean).
DRIFT_NOISY, DRIFT_UNRELIABLE = DRIFT_WARN, 1.0
DRIFT_NOISY_WITH_ROUNDS = 1.0
# The median over the run's passes of the spread of visit medians between
# rounds (the standard deviation of their logs: 0.2 is about 20%).
SPREAD_NOISY, SPREAD_UNRELIABLE = 0.20, 0.40
PEAK_FRACTION_MAX = 1.0  # a layer cannot run faster than the measured matmul peak


@dataclass(frozen=True)
class Verdict:
    """``level``: trustworthy, noisy, unreliable or unjudged; ``reasons``: one
    phrase per criterion that set it, with its figure and threshold; ``notes``:
    what the run recorded that did not set it (a calibration that moved while the
    rounds agreed)."""

    level: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def unreliable(self) -> bool:
        return self.level == UNRELIABLE

    @property
    def headline(self) -> str:
        """The verdict in one line, as reports print it first."""
        quiet = "the rounds agree" if self.notes else "the machine stayed quiet and the rounds agree"
        text = {TRUSTWORTHY: f"trustworthy: {quiet}",
                NOISY: "noisy: the figures stand, with wider intervals than a quiet machine gives",
                UNRELIABLE: "unreliable: differences between variants may be the machine's, not theirs; "
                            "run again on a quiet machine",
                UNJUDGED: "unjudged: the run recorded no calibration or noise to judge it by"}[self.level]
        said = self.reasons + [f"note: {note}" for note in self.notes]
        return f"timings {text}" + (f" ({'; '.join(said)})" if said else "")

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "reasons": list(self.reasons), "notes": list(self.notes)}


def run_verdict(meta: dict[str, Any], frame: pd.DataFrame, peak_fractions: pd.Series | None = None) -> Verdict:
    """The verdict of a run from its run.json ``meta`` (calibration, noise), its
    tidy rows ``frame`` (round spreads) and the rows' achieved fraction of the
    measured peak (``peak_fractions``, from the roofline)."""
    found: list[tuple[str, str]] = []  # (level, reason)
    notes: list[str] = []
    noise = meta.get("noise") or {}
    share = noise.get("other_share")
    if share is not None:
        if share > OTHER_SHARE_UNRELIABLE:
            found.append((UNRELIABLE, f"other processes took {share:.0%} of the cores, over "
                                      f"{OTHER_SHARE_UNRELIABLE:.0%}"))
        elif share > OTHER_SHARE_NOISY:
            found.append((NOISY, f"other processes took {share:.0%} of the cores, over {OTHER_SHARE_NOISY:.0%}"))
    spread = median_round_spread(frame)
    starts, ends = calibrations(meta), calibrations(meta, "end")
    for key, start in starts.items():
        end = ends.get(key) or {}
        for name, label in FIELDS.items():
            change = drift(start.get(name), end.get(name))
            if change is None or change <= DRIFT_NOISY:
                continue
            moved = f"the {label} moved from {format_rate(name, start[name])} to {format_rate(name, end[name])}"
            if spread is None:  # one round: the calibrations are the only witness
                level, limit = (UNRELIABLE, DRIFT_UNRELIABLE) if change > DRIFT_UNRELIABLE else (NOISY, DRIFT_NOISY)
                found.append((level, f"{moved} during the run, beyond ±{limit:.0%}"))
            elif change > DRIFT_NOISY_WITH_ROUNDS:
                found.append((NOISY, f"{moved} during the run, beyond ±{DRIFT_NOISY_WITH_ROUNDS:.0%}: figures "
                                     "against the measured peak are uncertain by as much"))
            else:
                notes.append(f"{moved} during the run; the pairing within rounds absorbs such moves")
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
        return Verdict(TRUSTWORTHY if judged else UNJUDGED, notes=notes if judged else [])
    worst = max(LEVELS.index(level) for level, _ in found)
    return Verdict(LEVELS[worst], [reason for level, reason in found if LEVELS.index(level) == worst]
                   + [reason for level, reason in found if LEVELS.index(level) < worst], notes)


def median_round_spread(frame: pd.DataFrame) -> float | None:
    """The median round spread of the run's measured passes (None with one round)."""
    if frame.empty or "round_spread" not in frame.columns:
        return None
    ok = frame[(frame["status"] == Status.OK)]
    values = [float(v) for v in pd.to_numeric(ok["round_spread"], errors="coerce") if not pd.isna(v)]
    return statistics.median(values) if values else None

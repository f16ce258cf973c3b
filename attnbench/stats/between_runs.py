"""Is run B's case different from run A's? The between-runs test, with the
*visit* as the unit (see ``attnbench.stats.paired`` for visits and the variance prior).

* ``visit_change``: a Welch-type t-test on the log visit medians, each run's
  variance moderated towards a prior pooled over all the cases of that run
  (3 to 5 visits per case give a poor variance on their own), after dropping
  visits disturbed far beyond the run's spread. A change is called only when
  the 90% interval of the case's change lies wholly beyond the minimum effect
  (5% by default): two one-sided tests at 5%, as in an equivalence test. A
  test of "no change at all" on raw samples flags the drift in nearly every
  case.
* ``compare_visits``: every case of two runs. A case with peers (the variants
  visited beside it, in the same unit of each round) is judged against them:
  the moment each unit ran at is divided out of its visits
  (``peer_normalized``) and the change the other peers share is taken off
  (``shifts_of_others``), so the machine's drift, between visits and between
  runs, cancels; a group that moved together beyond the others is reported
  (``standing_out``). Other cases are judged on their raw visits, beyond the
  change common to all cases (``common_shift``, reported on its own with its
  interval), discounted up to the minimum effect (``drift_allowance``).

Bottom layer: numpy and scipy only (and ``attnbench.stats.paired``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from attnbench.stats.paired import BOOTSTRAP, MAX_PRIOR_DF, VariancePrior, estimate_prior, moderated

# Between runs: two one-sided tests at 5% each (slower beyond the band, faster
# beyond it), i.e. the 90% interval of the change lies outside the band.
COMPARE_LEVEL = 0.90
MIN_EFFECT = 0.05  # a change between runs smaller than 5% is never called
MIN_ROUNDS = 2  # visits per side needed for a verdict between runs
MIN_PEERS = 3  # cases visited together needed to judge one against the others
MIN_GROUPS = 4  # groups of such cases needed to tell a group's change from the machine's drift
MIN_CASES_FOR_SHIFT = 16  # cases both runs measured, to estimate their common shift

# A visit this many of the run's standard deviations (and at least 5%) away from
# its case's median visit is taken as disturbed (see ``undisturbed``).
DISTURBED_SDS, DISTURBED_MIN, MIN_VISITS_TO_DROP = 4.0, math.log(1.05), 3

SLOWER, FASTER, SAME, TOO_FEW = "slower", "faster", "same", "too few rounds"
# The mark of each verdict, as asv prints them; x: failed or missing in a run.
MARK_SLOWER, MARK_FASTER, MARK_SAME, MARK_UNDECIDED, MARK_FAILED = "+", "-", "~", "?", "x"
MARKS = {SLOWER: MARK_SLOWER, FASTER: MARK_FASTER, SAME: MARK_SAME, TOO_FEW: MARK_UNDECIDED}


@dataclass(frozen=True)
class VisitChange:
    """Run B against run A for one case. ``ratio``: the geometric mean of B's
    visit medians over A's, as measured. ``relative``: that ratio over the
    machine's drift between the runs (``drift_allowance``), which is what the
    verdict judges, with its interval ``low``–``high``. ``p_value``: of the test that
    the change exceeds the minimum effect (NaN without a test). ``verdict``:
    ``slower``, ``faster``, ``same`` or ``too few rounds``."""

    ratio: float
    relative: float
    low: float
    high: float
    p_value: float
    verdict: str
    visits_a: int
    visits_b: int

    @property
    def significant(self) -> bool:
        return self.verdict in (SLOWER, FASTER)


@dataclass(frozen=True)
class CommonShift:
    """How much every case moved together between two runs: the median over
    cases of their log ratios B/A, with a bootstrap interval over cases and a
    verdict against the minimum effect. Machines drift by a few percent
    between back-to-back runs; a change under every case (a slower library, a
    different clock) shows here, not in the cases' marks."""

    ratio: float
    low: float
    high: float
    cases: int
    verdict: str
    variance: float  # of the log shift: added to every case's variance


@dataclass(frozen=True)
class PeerShift:
    """How much the variants measured beside a case (its setting group: same
    N, heads, dim, dtype, device and pass, visited in the same rounds) moved
    together between two runs: the median over them of their change B/A in
    peer-normalised visits, and the variance of its log."""

    ratio: float
    variance: float
    peers: int


def undisturbed(logs: np.ndarray, prior: VariancePrior | None) -> np.ndarray:
    """The log visit medians without the disturbed ones: with at least
    ``MIN_VISITS_TO_DROP`` visits, a visit further than ``DISTURBED_SDS`` prior
    standard deviations (and more than ``DISTURBED_MIN`` in log) from the case's
    median visit is dropped. A neighbour's burst of work slows every sample of
    the visit it lands on; averaged in, one such visit of five moves the mean
    by a fifth of its excess and inflates the variance, hiding real changes."""
    if prior is None or len(logs) < MIN_VISITS_TO_DROP:
        return logs
    centre = float(np.median(logs))
    limit = max(DISTURBED_SDS * math.sqrt(prior.variance), DISTURBED_MIN)
    keep = np.abs(logs - centre) <= limit
    return logs[keep] if keep.sum() >= MIN_ROUNDS else logs


def _logs(values: Sequence[float]) -> np.ndarray:
    return np.log(np.asarray([x for x in values if x > 0 and math.isfinite(x)], dtype=float))


def visit_variance_prior(visit_medians: Sequence[Sequence[float]]) -> VariancePrior | None:
    """A run's prior for the variance of log visit medians, from every case
    (each item: that case's visit medians) with at least two visits."""
    variances, dfs = [], []
    for medians in visit_medians:
        logs = _logs(medians)
        if len(logs) >= 2:
            variances.append(float(logs.var(ddof=1)))
            dfs.append(len(logs) - 1)
    return estimate_prior(variances, dfs)


def visit_change(a: Sequence[float], b: Sequence[float], prior_a: VariancePrior | None = None,
                 prior_b: VariancePrior | None = None, level: float = COMPARE_LEVEL,
                 min_effect: float = MIN_EFFECT, shift: CommonShift | None = None,
                 peers: PeerShift | None = None) -> VisitChange:
    """Is run B's case slower or faster than run A's, beyond ``min_effect`` and
    beyond the machine's drift (the ``shift`` common to all cases, up to
    ``min_effect``: see ``drift_allowance``)?

    ``a``, ``b``: the case's visit medians in each run (one per round).
    Welch's t on the log visit medians, each side's variance moderated towards
    its run's prior (disturbed visits dropped first, see ``undisturbed``); a
    change is called when the ``level`` interval of the relative ratio lies
    entirely above ``1 + min_effect`` (slower) or below ``1 / (1 + min_effect)``
    (faster): two one-sided tests at (1 - level) / 2 each. Fewer than
    ``MIN_ROUNDS`` visits on either side: ``too few rounds``, no verdict.
    ``peers``: judge the change relative to the variants measured beside
    this one (``a`` and ``b`` are then peer-normalised visits, see
    ``compare_visits``): their shift is taken off whole, with its variance,
    and ``shift`` is not used."""
    la, lb = _logs(a), _logs(b)
    if len(la) == 0 or len(lb) == 0:
        raise ValueError("visit_change: both sides need at least one positive visit median")
    la, lb = undisturbed(la, prior_a), undisturbed(lb, prior_b)
    measured = float(lb.mean() - la.mean())
    band = math.log1p(min_effect)
    offset = math.log(peers.ratio) if peers is not None else drift_allowance(shift, min_effect)
    diff = measured - offset
    ratio, relative = math.exp(measured), math.exp(diff)
    if len(la) < MIN_ROUNDS or len(lb) < MIN_ROUNDS:
        return VisitChange(ratio, relative, math.nan, math.nan, math.nan, TOO_FEW, len(la), len(lb))
    va, da = moderated(float(la.var(ddof=1)), len(la) - 1, prior_a)
    vb, db = moderated(float(lb.var(ddof=1)), len(lb) - 1, prior_b)
    wa, wb = va / len(la), vb / len(lb)
    # The allowance's own uncertainty, unless clipped (then it no longer moves with the shift).
    if peers is not None:
        offset_variance = peers.variance
    else:
        clipped = shift is None or abs(math.log(shift.ratio)) >= band
        offset_variance = 0.0 if clipped else shift.variance
    se = math.sqrt(wa + wb + offset_variance)
    if se == 0:  # identical visits on both sides: the change is known exactly
        verdict = SLOWER if diff > band else FASTER if diff < -band else SAME
        return VisitChange(ratio, relative, relative, relative, 0.0 if verdict != SAME else 1.0, verdict,
                           len(la), len(lb))
    df = (wa + wb) ** 2 / (wa**2 / da + wb**2 / db) if wa + wb > 0 else MAX_PRIOR_DF  # Welch–Satterthwaite
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p_slow = float(stats.t.sf((diff - band) / se, df))  # H0: not slower than the band
    p_fast = float(stats.t.cdf((diff + band) / se, df))  # H0: not faster than the band
    p = min(1.0, 2 * min(p_slow, p_fast))
    low, high = diff - half, diff + half
    verdict = SLOWER if low > band else FASTER if high < -band else SAME
    return VisitChange(ratio, relative, math.exp(low), math.exp(high), p, verdict, len(la), len(lb))


def drift_allowance(shift: CommonShift | None, min_effect: float = MIN_EFFECT) -> float:
    """The part of the common shift taken as the machine's drift between runs
    (log): the shift, clipped to the minimum effect. Drift is a few percent;
    a larger shift is more likely a change (a library, or the variant that is
    half of a two-variant suite), so only this much of it is discounted and
    the rest is judged with each case."""
    if shift is None:
        return 0.0
    band = math.log1p(min_effect)
    return min(max(math.log(shift.ratio), -band), band)


def common_shift(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]],
                 level: float = COMPARE_LEVEL, min_effect: float = MIN_EFFECT, seed: int = 0) -> CommonShift | None:
    """The change every case shares between runs A and B (median over the cases
    both measured of the difference of mean log visit medians); None with
    fewer than ``MIN_CASES_FOR_SHIFT`` such cases, where a median says little."""
    diffs = []
    for key in [k for k in a if k in b]:  # in A's order: a set's order changes with the hash seed
        la, lb = _logs(a[key]), _logs(b[key])
        if len(la) and len(lb):
            diffs.append(float(lb.mean() - la.mean()))
    if len(diffs) < MIN_CASES_FOR_SHIFT:
        return None
    d = np.array(diffs)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(d, size=(BOOTSTRAP, len(d))), axis=1)
    tail = (1 - level) / 2
    low, high = float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))
    band = math.log1p(min_effect)
    verdict = SLOWER if low > band else FASTER if high < -band else SAME
    return CommonShift(ratio=math.exp(float(np.median(d))), low=math.exp(low), high=math.exp(high),
                       cases=len(d), verdict=verdict, variance=float(boot.var()))


def peer_normalized(visits: Mapping[Any, Mapping[int, float]], groups: Mapping[Any, Any],
                    min_peers: int = MIN_PEERS) -> dict[Any, dict[int, float]]:
    """Each visit median over its unit's moment, for the keys whose group (the
    cases visited together, one after the other in the same worker: a setting
    group and pass) has at least ``min_peers`` members with two or more
    visits; other keys are left out.

    The moment of group g in round r is exp(δ), δ the median over the members
    present in that round of (log visit − the member's mean log visit): how
    much faster or slower the machine ran everything measured then. On a
    shared machine the speed drifts by several percent from one moment to the
    next, alike for the variants measured back to back, so a visit's ratio to
    a peer's visit of the same round spreads less than the visit. Dividing it out leaves each
    case's own spread; a round with fewer than ``min_peers`` members present
    is left as it is."""
    by_group: dict[Any, list[Any]] = {}
    for key in visits:
        if key in groups:
            by_group.setdefault(groups[key], []).append(key)
    out: dict[Any, dict[int, float]] = {}
    for members in by_group.values():
        logs = {k: {r: math.log(v) for r, v in visits[k].items() if v > 0 and math.isfinite(v)} for k in members}
        usable = [k for k in members if len(logs[k]) >= MIN_ROUNDS]
        if len(usable) < min_peers:
            continue
        means = {k: float(np.mean(list(logs[k].values()))) for k in usable}
        centred = {k: {r: x - means[k] for r, x in logs[k].items()} for k in usable}
        moment = {}
        for r in {r for k in usable for r in centred[k]}:
            present = [centred[k][r] for k in usable if r in centred[k]]
            moment[r] = float(np.median(present)) if len(present) >= min_peers else 0.0
        for k in usable:
            out[k] = {r: math.exp(x - moment[r]) for r, x in sorted(logs[k].items())}
    return out


def _member_changes(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], groups: Mapping[Any, Any],
                    min_peers: int) -> dict[Any, dict[Any, float]]:
    """Per group with at least ``min_peers`` members in both runs: each
    member's change in mean log visit."""
    by_group: dict[Any, dict[Any, float]] = {}
    for key in [k for k in a if k in b]:  # in A's order: a set's order changes with the hash seed
        la, lb = _logs(a[key]), _logs(b[key])
        if key in groups and len(la) and len(lb):
            by_group.setdefault(groups[key], {})[key] = float(lb.mean() - la.mean())
    return {g: members for g, members in by_group.items() if len(members) >= min_peers}


def _spread(values: np.ndarray) -> float:
    """Standard deviation from the median absolute deviation (robust to one member that changed)."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _shift(changes: np.ndarray, floor: float = 0.0) -> PeerShift:
    """The change ``changes`` share: their median, with the variance of a
    median of that many (π/2 times that of a mean), the spread never taken
    below ``floor``."""
    spread = max(_spread(changes), floor)
    return PeerShift(ratio=math.exp(float(np.median(changes))), variance=math.pi / 2 * spread**2 / len(changes),
                     peers=len(changes))


def peer_shifts(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], groups: Mapping[Any, Any],
                min_peers: int = MIN_PEERS) -> dict[Any, PeerShift]:
    """Per group with at least ``min_peers`` members in both runs (``a``, ``b``:
    their peer-normalised visits), the change the members share (``_shift``):
    how the setting as a whole moved."""
    return _group_shifts(_member_changes(a, b, groups, min_peers))


def _group_shifts(members: Mapping[Any, Mapping[Any, float]]) -> dict[Any, PeerShift]:
    return {g: _shift(np.array(list(m.values()))) for g, m in members.items()}


def shifts_of_others(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], groups: Mapping[Any, Any],
                     min_peers: int = MIN_PEERS) -> dict[Any, PeerShift]:
    """Per case of a group with at least ``min_peers`` members in both runs:
    the change its peers (the *other* members) share, what its own change is
    judged against. Leaving the case out matters: with it, a case that
    changed pulls the median of five towards itself and widens their spread
    (on nine A/A pairs of the quick suite with a planted 15% slowdown, the
    slowdown was found in 84% of its cases with it, 95% without). The spread
    of the others is taken no lower than the spread pooled over all groups
    (two or three others can agree by chance)."""
    return _shifts_of_others(_member_changes(a, b, groups, min_peers))


def _shifts_of_others(members: Mapping[Any, Mapping[Any, float]]) -> dict[Any, PeerShift]:
    residuals = [x - float(np.median(list(m.values()))) for m in members.values() for x in m.values()]
    pooled = _spread(np.array(residuals)) if residuals else 0.0
    out = {}
    for changes in members.values():
        for key in changes:
            out[key] = _shift(np.array([x for k, x in changes.items() if k != key]), floor=pooled)
    return out


def standing_out(shifts: Mapping[Any, PeerShift], level: float = COMPARE_LEVEL,
                 min_effect: float = MIN_EFFECT) -> dict[Any, PeerShift]:
    """The groups whose shared change stands out from the other groups': beyond
    the minimum effect, with a ``level`` interval from the spread of the groups'
    shifts (median absolute deviation). Such a group moved together between
    the runs: a change under all its variants (a kernel they share), or the
    machine's state for that setting (a shared VM can slow every variant of
    one setting for a whole run). One pair of runs cannot tell the two apart, so the group is
    reported (``RunsComparison.moved_together``) and its cases are still
    judged against each other. Fewer than ``MIN_GROUPS`` groups: none (the
    spread of the groups cannot be told)."""
    if len(shifts) < MIN_GROUPS:
        return {}
    logs = {g: math.log(s.ratio) for g, s in shifts.items()}
    centre = float(np.median(list(logs.values())))
    spread = 1.4826 * float(np.median([abs(x - centre) for x in logs.values()]))
    reach = math.log1p(min_effect) + float(stats.norm.ppf(0.5 + level / 2)) * spread
    return {g: s for g, s in shifts.items() if abs(logs[g] - centre) > reach}


@dataclass(frozen=True)
class RunsComparison:
    changes: dict[Any, VisitChange]  # per key found in both runs
    shift: CommonShift | None
    peer_judged: frozenset = frozenset()  # the keys judged against their peers
    group_shifts: Mapping[Any, PeerShift] = field(default_factory=dict)  # per group judged so (``peer_shifts``)
    moved_together: Mapping[Any, PeerShift] = field(default_factory=dict)  # those standing out (``standing_out``)


def _as_rounds(visits: Sequence[float] | Mapping[int, float]) -> dict[int, float]:
    return dict(visits) if isinstance(visits, Mapping) else dict(enumerate(visits))


def compare_visits(a: Mapping[Any, Sequence[float] | Mapping[int, float]],
                   b: Mapping[Any, Sequence[float] | Mapping[int, float]],
                   level: float = COMPARE_LEVEL, min_effect: float = MIN_EFFECT,
                   adjust_shift: bool = True, groups: Mapping[Any, Any] | None = None,
                   min_peers: int = MIN_PEERS) -> RunsComparison:
    """Every case of two runs: ``a`` and ``b`` map a case key to its visit
    medians (a list, or round -> median).

    With ``groups`` (key -> the group of cases visited together in each round)
    a case whose group has at least ``min_peers`` members in both runs is
    judged against its peers: its visits are divided by their unit's moment
    (``peer_normalized``), and its change is taken relative to the change the
    other members share (``shifts_of_others``), so the machine's drift,
    between visits and between runs, cancels; a group whose shared change
    (``peer_shifts``) stands out from the others' is reported in
    ``moved_together`` (``standing_out``). Unless the
    run has too few cases for a common shift (a change under every case would
    then go unseen). Other cases are judged on their raw visits: each
    run's variance prior comes from all its cases, and the change is taken
    beyond the common shift (``adjust_shift``, up to the minimum effect). The
    common shift over all cases is reported either way."""
    raw_a = {k: list(_as_rounds(v).values()) for k, v in a.items()}
    raw_b = {k: list(_as_rounds(v).values()) for k, v in b.items()}
    prior_a = visit_variance_prior(list(raw_a.values()))
    prior_b = visit_variance_prior(list(raw_b.values()))
    shift = common_shift(raw_a, raw_b, level, min_effect) if adjust_shift else None
    norm_a: dict[Any, list[float]] = {}
    norm_b: dict[Any, list[float]] = {}
    if groups:
        norm_a = {k: list(v.values()) for k, v in
                  peer_normalized({k: _as_rounds(v) for k, v in a.items()}, groups, min_peers).items()}
        norm_b = {k: list(v.values()) for k, v in
                  peer_normalized({k: _as_rounds(v) for k, v in b.items()}, groups, min_peers).items()}
    members = _member_changes(norm_a, norm_b, groups, min_peers) if groups and shift is not None else {}
    peers = _shifts_of_others(members)
    judged = set(peers)
    group_shifts = _group_shifts(members)
    prior_na = visit_variance_prior([norm_a[k] for k in judged])
    prior_nb = visit_variance_prior([norm_b[k] for k in judged])
    changes = {}
    for key in a:
        if key not in b or not len(_logs(raw_a[key])) or not len(_logs(raw_b[key])):
            continue
        if key in judged:
            change = visit_change(norm_a[key], norm_b[key], prior_na, prior_nb, level, min_effect,
                                  peers=peers[key])
            raw = math.exp(float(_logs(raw_b[key]).mean() - _logs(raw_a[key]).mean()))
            changes[key] = replace(change, ratio=raw)
        else:
            changes[key] = visit_change(raw_a[key], raw_b[key], prior_a, prior_b, level, min_effect, shift)
    return RunsComparison(changes=changes, shift=shift, peer_judged=frozenset(judged), group_shifts=group_shifts,
                          moved_together=standing_out(group_shifts, level, min_effect))

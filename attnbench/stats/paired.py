"""Figures that repeat: paired ratios with intervals, with the *visit* as the unit.

A run visits every case in R rounds, each round all cases in a shuffled order;
a visit is one worker that builds the layer and takes a few samples, and its
summary is the median of those samples (the visit median). Samples of one
visit share the machine's state of that moment (clock, caches, neighbours), so
their spread says little about how much the visit median itself moves from one
moment to the next: that is what the visits measure.

* ``paired_ratio``: a variant's speed-up over a baseline (or memory ratio) from
  visits of the same round, so drift common to both cancels. Per round, the
  ratio of the two visits: where they took their samples in turns (one unit,
  ``bench.interleave``), the Hodges–Lehmann estimate of the per-turn ratios,
  whose two samples share a moment; otherwise the ratio of the two visit
  medians. The rounds' ratios are combined as a geometric mean, with a
  t-interval on the log ratios across rounds (R - 1 degrees of freedom, or
  more with a variance prior pooled from the run's other pairs, see below).
  With one round there is nothing to pair across: a bootstrap over the samples
  (or turns) of that single visit, which ignores between-visit drift (said in
  the interval's ``note``).
* ``attnbench.stats.between_runs``: is run B's case different from run A's (it
  builds on the prior below).
* ``estimate_prior``: the variance prior, by the empirical-Bayes method of
  limma (Smyth 2004, "Linear models and empirical Bayes methods for assessing
  differential expression"): the per-case variances of log visit medians are
  taken as scaled chi-square draws around a common scale, whose spread across
  cases gives the prior's degrees of freedom. A case's moderated variance is
  ``(d0·s0² + d·s²) / (d0 + d)`` with ``d0 + d`` degrees of freedom.
* ``spearman_interval``: a bootstrap over rounds of the rank correlation
  between measured speed-ups and a published table's.

This module is the bottom layer: numpy and scipy only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

LEVEL = 0.95  # the intervals of ratios and correlations within a run
BOOTSTRAP = 2000  # resamples of the bootstrap intervals
MAX_PRIOR_DF = 1000.0  # "no spread beyond chance": the prior then dominates every case

Rounds = Sequence[Sequence[float]]  # per round, the samples of that visit (ms, MiB, ...)


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval. ``method``: ``t-rounds`` (t-interval on the
    log ratios across rounds), ``bootstrap-samples`` (one round: the samples of
    one visit resampled), ``exact`` (no spread at all, e.g. CPU memory),
    ``bootstrap-rounds`` (rounds resampled), or ``none`` (no interval possible:
    ``low`` and ``high`` are NaN)."""

    estimate: float
    low: float
    high: float
    rounds: int
    method: str
    note: str = ""

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def format(self, digits: int = 3, unit: str = "×") -> str:
        """``18.4× [17.9–19.0]``: the estimate and its interval to ``digits``
        significant digits; the estimate alone when there is no interval."""
        if math.isnan(self.estimate):
            return "—"
        text = f"{_sig(self.estimate, digits)}{unit}"
        if self.has_interval and self.method != "exact":
            text += f" [{_sig(self.low, digits)}–{_sig(self.high, digits)}]"
        return text


def _sig(value: float, digits: int) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class VariancePrior:
    """The empirical-Bayes prior of a run's variance of log visit medians (or of
    log paired ratios): scale ``variance`` with ``df`` degrees of freedom,
    estimated from ``items`` per-case variances."""

    variance: float
    df: float
    items: int


# --- the variance prior -------------------------------------------------------------


def _trigamma(x: np.ndarray | float) -> np.ndarray | float:
    return special.polygamma(1, x)


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (y > 0), by Newton's method as in limma."""
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(_trigamma(x))
        step = tri * (1.0 - tri / y) / float(special.polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def estimate_prior(variances: Sequence[float], dfs: Sequence[float]) -> VariancePrior | None:
    """The variance prior (s0², d0) from per-item sample variances ``variances``
    with ``dfs`` degrees of freedom each (limma's ``squeezeVar``, without
    covariates). Items with no degrees of freedom or a zero variance are left
    out; None with fewer than three usable items."""
    pairs = [(float(v), float(d)) for v, d in zip(variances, dfs, strict=True)
             if d >= 1 and math.isfinite(v) and v > 0]
    if len(pairs) < 3:
        return None
    s2 = np.array([p[0] for p in pairs])
    d = np.array([p[1] for p in pairs])
    # log s² = log σ² + log(χ²_d / d): remove the chi-square's mean and variance.
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    e_mean = float(e.mean())
    excess = float(((e - e_mean) ** 2).sum() / (len(e) - 1) - np.mean(_trigamma(d / 2)))
    if excess <= 0:  # the variances spread no more than chance alone would make them
        return VariancePrior(variance=float(math.exp(e_mean)), df=MAX_PRIOR_DF, items=len(pairs))
    d0 = min(2.0 * _trigamma_inverse(excess), MAX_PRIOR_DF)
    s0 = math.exp(e_mean + float(special.digamma(d0 / 2)) - math.log(d0 / 2))
    return VariancePrior(variance=s0, df=d0, items=len(pairs))


def moderated(variance: float, df: float, prior: VariancePrior | None) -> tuple[float, float]:
    """(variance, degrees of freedom) of one item, moderated towards ``prior``."""
    if prior is None:
        return variance, df
    if df <= 0 or not math.isfinite(variance):
        return prior.variance, prior.df
    total = prior.df + df
    return (prior.df * prior.variance + df * variance) / total, total


# --- paired ratios within a run --------------------------------------------------------


def _walsh_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n)  # the pairs i <= j of the Walsh averages


def hodges_lehmann(values: np.ndarray) -> np.ndarray:
    """The Hodges–Lehmann estimate of location along the last axis: the median
    of the Walsh averages (x_i + x_j) / 2, i <= j. As efficient as the mean for
    normal data (95%) and not moved by one wild value."""
    i, j = _walsh_index(values.shape[-1])
    return np.median((values[..., i] + values[..., j]) / 2, axis=-1)


def turn_log_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> np.ndarray:
    """log(numerator_k / denominator_k) for the turns k both sides sampled: in
    turns the k-th sample of every case of a unit comes from the k-th turn, so
    a case that left early (its ``max_reps``) has the unit's first turns."""
    n = min(len(numerator), len(denominator))
    num, den = np.asarray(numerator[:n], dtype=float), np.asarray(denominator[:n], dtype=float)
    keep = (num > 0) & (den > 0)
    return np.log(num[keep]) - np.log(den[keep])


def round_log_ratio(numerator: Sequence[float], denominator: Sequence[float], in_turns: bool = False) -> float:
    """One round's log ratio: for visits sampled in the same turns, the
    Hodges–Lehmann estimate of the per-turn log ratios (each turn's two samples
    share the moment, which the ratio divides out); otherwise the log of the
    ratio of the two visit medians. NaN when a side has no samples."""
    if in_turns:
        logs = turn_log_ratios(numerator, denominator)
        return float(hodges_lehmann(logs)) if len(logs) else math.nan
    if not len(numerator) or not len(denominator):
        return math.nan
    num, den = float(np.median(numerator)), float(np.median(denominator))
    return math.log(num / den) if num > 0 and den > 0 else math.nan


def _turn_flags(in_turns: Sequence[bool] | None, rounds: int) -> list[bool]:
    return list(in_turns) if in_turns is not None else [False] * rounds


def log_ratios(numerator: Rounds, denominator: Rounds, in_turns: Sequence[bool] | None = None) -> np.ndarray:
    """``round_log_ratio`` per round, for the rounds where both sides have
    samples (paired by round index; ``in_turns``: per round, whether the two
    visits took their samples in the same turns)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"paired ratio: {len(numerator)} rounds against {len(denominator)}; pair them by round")
    logs = np.array([round_log_ratio(a, b, t)
                     for a, b, t in zip(numerator, denominator, _turn_flags(in_turns, len(numerator)), strict=True)],
                    dtype=float)
    return logs[np.isfinite(logs)]


def paired_ratio(numerator: Rounds, denominator: Rounds, level: float = LEVEL,
                 prior: VariancePrior | None = None, seed: int = 0,
                 in_turns: Sequence[bool] | None = None) -> Interval:
    """The ratio numerator / denominator from visits of the same round: per round
    the two visits' ratio (``round_log_ratio``: per turn where ``in_turns``
    says they were sampled in the same turns, else of their medians), combined
    as a geometric mean across rounds, with a ``level`` t-interval on the log
    ratios (``prior``: the run's pooled variance of log ratios, see
    ``estimate_prior``). A speed-up is ``paired_ratio(baseline_rounds,
    variant_rounds)``.

    All log ratios equal (deterministic figures such as CPU memory): the
    interval is the estimate itself (``exact``). One round: a bootstrap over the
    samples of that one visit each side (over its turns, in turns); the
    interval then ignores the drift between visits, which is usually the
    larger part."""
    logs = log_ratios(numerator, denominator, in_turns)
    rounds = len(logs)
    if rounds == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none", "no round with both sides measured")
    estimate = float(math.exp(logs.mean()))
    if rounds == 1:
        a, b, together = [(a, b, t) for a, b, t in zip(numerator, denominator,
                                                       _turn_flags(in_turns, len(numerator)), strict=True)
                          if len(a) and len(b)][0]
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            return Interval(estimate, estimate, estimate, 1, "exact")
        if together:
            low, high = _bootstrap_turns(turn_log_ratios(a, b), level, seed)
        else:
            low, high = _bootstrap_median_ratio(a, b, level, seed)
        return Interval(estimate, low, high, 1, "bootstrap-samples",
                        "one round: the interval resamples one visit's samples and ignores the drift "
                        "between visits")
    if np.ptp(logs) == 0:
        return Interval(estimate, estimate, estimate, rounds, "exact")
    variance, df = moderated(float(logs.var(ddof=1)), rounds - 1, prior)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(variance / rounds)
    mean = float(logs.mean())
    return Interval(estimate, math.exp(mean - half), math.exp(mean + half), rounds, "t-rounds")


def _bootstrap_median_ratio(numerator: Sequence[float], denominator: Sequence[float], level: float,
                            seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    a = np.median(rng.choice(num, size=(BOOTSTRAP, len(num))), axis=1)
    b = np.median(rng.choice(den, size=(BOOTSTRAP, len(den))), axis=1)
    ratios = a / b
    tail = (1 - level) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def _bootstrap_turns(logs: np.ndarray, level: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = hodges_lehmann(rng.choice(logs, size=(BOOTSTRAP, len(logs))))
    tail = (1 - level) / 2
    return float(np.exp(np.quantile(draws, tail))), float(np.exp(np.quantile(draws, 1 - tail)))


def ratio_prior(pairs: Sequence[tuple[Rounds, Rounds] | tuple[Rounds, Rounds, Sequence[bool]]]
                ) -> VariancePrior | None:
    """The variance prior of the log paired ratios of a run's (numerator,
    denominator[, in_turns]) pairs, e.g. every variant × case against the
    baseline."""
    variances, dfs = [], []
    for numerator, denominator, *turns in pairs:
        logs = log_ratios(numerator, denominator, turns[0] if turns else None)
        if len(logs) >= 2:
            variances.append(float(logs.var(ddof=1)))
            dfs.append(len(logs) - 1)
    return estimate_prior(variances, dfs)


# --- agreement with a published table ----------------------------------------------------


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than
    two pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman: the two sequences differ in length")
    if len(x) < 2:
        return math.nan
    rx, ry = stats.rankdata(np.asarray(x, dtype=float)), stats.rankdata(np.asarray(y, dtype=float))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


def spearman_interval(measured: Mapping[str, Sequence[float]], published: Mapping[str, float],
                      level: float = LEVEL, seed: int = 0) -> Interval:
    """Spearman's rank correlation between measured speed-ups and published ones,
    with a bootstrap interval over rounds. ``measured``: per model, its paired
    speed-up in each round (the same round index across models; NaN where a
    round is missing); the point estimate ranks the geometric means over all
    rounds. Each resample draws rounds with replacement, the same rounds for
    every model, so drift shared within a round stays shared."""
    models = [m for m in measured if m in published]
    if len(models) < 2:
        return Interval(math.nan, math.nan, math.nan, 0, "none", "fewer than two models in both")
    table = np.array([np.asarray(measured[m], dtype=float) for m in models])  # models × rounds
    pub = np.array([float(published[m]) for m in models])
    rounds = table.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = spearman(np.exp(np.nanmean(np.log(table), axis=1)), pub)
    if rounds < 2:
        return Interval(point, math.nan, math.nan, rounds, "none", "one round: no interval over rounds")
    rng = np.random.default_rng(seed)
    draws = []
    logs = np.log(table)
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, rounds, size=rounds)
        with warnings.catch_warnings():  # a model missing in every drawn round: NaN, dropped below
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(logs[:, pick], axis=1)
        if np.isfinite(means).all():
            rho = spearman(means, pub)
            if math.isfinite(rho):
                draws.append(rho)
    if not draws:
        return Interval(point, math.nan, math.nan, rounds, "none", "no resample ranked every model")
    tail = (1 - level) / 2
    return Interval(point, float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)), rounds,
                    "bootstrap-rounds")

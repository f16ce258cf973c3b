"""attnbench.stats.paired on synthetic runs with a known answer: paired ratios and
their intervals, the variance prior, the between-runs test at the visit level
(A/A flags few cases, a planted 15% slowdown is found), and the bootstrap
interval of a rank correlation."""

import math

import numpy as np
import pytest

from attnbench.stats import between_runs, paired
from attnbench.stats.between_runs import compare_visits, visit_change
from attnbench.stats.paired import Interval, estimate_prior, paired_ratio, ratio_prior, spearman_interval


def visit(rng: np.random.Generator, median: float, n: int = 5, sigma: float = 0.02) -> list[float]:
    """The samples of one visit around ``median`` (log-normal spread within the visit)."""
    return [float(x) for x in median * np.exp(rng.normal(0.0, sigma, n))]


# --- paired ratios within a run --------------------------------------------------------

def test_the_paired_ratio_recovers_a_planted_speed_up_under_drift_that_fools_the_unpaired_one():
    """Rounds 1 and 3 run 40% slow (a neighbour, a clock): both variants feel
    it. The fast variant fits more samples into its time budget in every
    round, so pooling all samples weighs the slow rounds differently on each
    side; pairing by round cancels the drift."""
    rng = np.random.default_rng(11)
    drift = [1.0, 1.4, 1.0, 1.4, 1.0]
    base = [visit(rng, 10.0 * d, n=5) for d in drift]
    fast = [visit(rng, 2.0 * d, n=30 if d > 1 else 5) for d in drift]
    speedup = paired_ratio(base, fast)
    assert speedup.estimate == pytest.approx(5.0, rel=0.02)
    assert speedup.low < 5.0 < speedup.high and speedup.method == "t-rounds" and speedup.rounds == 5
    unpaired = np.median(np.concatenate(base)) / np.median(np.concatenate(fast))
    assert abs(unpaired / 5.0 - 1) > 0.2  # off by the drift


def _coverage(rounds: int, sigma: float, runs: int, pairs: int, use_prior: bool, seed: int) -> float:
    rng = np.random.default_rng(seed)
    truth = 3.0
    covered = total = 0
    for _ in range(runs):
        drift = np.exp(rng.normal(0, 0.1, rounds))  # common to both sides of a round
        data = []
        for _ in range(pairs):
            noise = np.exp(rng.normal(0, sigma, (2, rounds)))
            base = [visit(rng, truth * d * e, sigma=0.005) for d, e in zip(drift, noise[0], strict=True)]
            var = [visit(rng, d * e, sigma=0.005) for d, e in zip(drift, noise[1], strict=True)]
            data.append((base, var))
        prior = ratio_prior(data) if use_prior else None
        for base, var in data:
            interval = paired_ratio(base, var, prior=prior)
            covered += interval.low <= truth <= interval.high
            total += 1
    return covered / total


@pytest.mark.parametrize("rounds,use_prior", [(3, False), (5, False), (5, True)])
def test_the_95_percent_interval_covers_the_truth_in_95_percent_of_simulated_runs(rounds, use_prior):
    coverage = _coverage(rounds, sigma=0.04, runs=200 if not use_prior else 20, pairs=2 if not use_prior else 24,
                         use_prior=use_prior, seed=rounds)
    assert 0.92 <= coverage <= 0.98, coverage


def test_one_round_falls_back_to_the_samples_and_says_what_it_ignores():
    rng = np.random.default_rng(3)
    interval = paired_ratio([visit(rng, 10.0, 9)], [visit(rng, 4.0, 9)])
    assert interval.method == "bootstrap-samples" and interval.rounds == 1
    assert interval.low < 2.5 < interval.high and "drift" in interval.note


def test_deterministic_figures_have_an_exact_interval_and_missing_rounds_are_dropped():
    mem = paired_ratio([[272.0]] * 4, [[20.0]] * 4)
    assert mem.method == "exact" and mem.low == mem.high == mem.estimate == pytest.approx(13.6)
    assert mem.format() == "13.6×"
    partial = paired_ratio([[10.0], [], [12.0]], [[5.0], [5.0], [6.0]])
    assert partial.rounds == 2 and partial.estimate == pytest.approx(2.0)
    assert paired_ratio([[]], [[1.0]]).method == "none"
    with pytest.raises(ValueError, match="rounds"):
        paired_ratio([[1.0]], [[1.0], [1.0]])


def test_hodges_lehmann_is_the_median_of_the_walsh_averages():
    assert paired.hodges_lehmann(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    assert paired.hodges_lehmann(np.array([0.0, 0.0, 10.0])) == pytest.approx(2.5)  # 0 0 0 5 5 10
    assert paired.hodges_lehmann(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 10.0]])) == pytest.approx([2.0, 2.5])
    assert paired.hodges_lehmann(np.array([0.1] * 6 + [2.0])) == pytest.approx(0.1)  # one wild turn


def test_visits_sampled_in_turns_are_divided_turn_by_turn():
    """Each turn's samples share a moment: here the machine slowed to half
    its speed after four turns, when the variant had left the turns (its
    max_reps). Turn by turn the ratio is exactly 3; the medians of the two
    visits cover different moments and miss it."""
    moments = np.array([1.0, 1.1, 1.0, 1.2, 2.0, 1.9, 2.0, 1.8])
    base, variant = list(3.0 * moments), list(moments[:4])
    assert paired.round_log_ratio(base, variant, in_turns=True) == pytest.approx(math.log(3.0))
    assert paired.round_log_ratio(base, variant) == pytest.approx(math.log(np.median(base) / np.median(variant)))
    assert abs(paired.round_log_ratio(base, variant) - math.log(3.0)) > 0.3
    assert math.isnan(paired.round_log_ratio([], variant, in_turns=True))
    interval = paired_ratio([base] * 3, [variant] * 3, in_turns=[True, False, True])
    assert interval.rounds == 3
    assert interval.estimate == pytest.approx(math.exp((2 * math.log(3.0) + paired.round_log_ratio(base, variant)) / 3))


def test_turn_pairing_takes_the_moments_out_of_a_speed_up():
    """Simulated rounds whose samples move with the moment (15% per turn,
    shared within a turn) and by 4% of their own: paired turn by turn the
    rounds' log ratios spread by about the samples' own noise (4% × √2 per
    turn, over 6 turns), their medians' ratios by more; both centre on the
    truth."""
    rng = np.random.default_rng(5)
    by_turn, by_median = [], []
    for _ in range(400):
        moments = np.exp(rng.normal(0, 0.15, 6))
        base = 5.0 * moments * np.exp(rng.normal(0, 0.04, 6))
        variant = moments * np.exp(rng.normal(0, 0.04, 6))
        by_turn.append(paired.round_log_ratio(list(base), list(variant), in_turns=True))
        by_median.append(paired.round_log_ratio(list(base), list(variant)))
    assert np.mean(by_turn) == pytest.approx(math.log(5.0), abs=0.01)
    assert np.mean(by_median) == pytest.approx(math.log(5.0), abs=0.02)
    assert np.std(by_turn) == pytest.approx(0.04 * math.sqrt(2 / 6), rel=0.25)
    assert np.std(by_median) > 1.3 * np.std(by_turn)


def test_one_round_in_turns_resamples_its_turns():
    rng = np.random.default_rng(4)
    moments = np.exp(rng.normal(0, 0.2, 9))
    base = list(10.0 * moments * np.exp(rng.normal(0, 0.02, 9)))
    variant = list(4.0 * moments * np.exp(rng.normal(0, 0.02, 9)))
    paired_turns = paired_ratio([base], [variant], in_turns=[True])
    alone = paired_ratio([base], [variant])
    assert paired_turns.method == "bootstrap-samples" and paired_turns.low < 2.5 < paired_turns.high
    width = math.log(paired_turns.high / paired_turns.low)
    assert width < 0.5 * math.log(alone.high / alone.low)  # the moments divided out
    exact = paired_ratio([[3.0, 6.0, 4.5]], [[1.0, 2.0, 1.5]], in_turns=[True])
    assert exact.low == pytest.approx(3.0) and exact.high == pytest.approx(3.0)


def test_interval_format():
    assert Interval(18.43, 17.91, 19.02, 5, "t-rounds").format() == "18.4× [17.9–19.0]"
    assert Interval(0.512, 0.5, 0.53, 5, "t-rounds").format(unit="") == "0.512 [0.500–0.530]"
    assert Interval(math.nan, math.nan, math.nan, 0, "none").format() == "—"


# --- the variance prior --------------------------------------------------------------------

def test_the_prior_recovers_a_common_variance_and_senses_heterogeneity():
    rng = np.random.default_rng(5)
    d = 4
    same = [float(np.var(rng.normal(0, 0.03, d + 1), ddof=1)) for _ in range(400)]
    prior = estimate_prior(same, [d] * 400)
    assert prior.variance == pytest.approx(0.03**2, rel=0.2) and prior.df > 15
    # σ² drawn from a scaled inverse chi-square with 6 degrees of freedom: limma's model
    sigma2 = 0.03**2 * 6 / rng.chisquare(6, 400)
    mixed = [float(np.var(rng.normal(0, math.sqrt(s), d + 1), ddof=1)) for s in sigma2]
    prior = estimate_prior(mixed, [d] * 400)
    assert 3 < prior.df < 15 and prior.variance == pytest.approx(0.03**2, rel=0.3)
    assert estimate_prior([0.1, 0.2], [2, 2]) is None  # too few items


# --- two runs, the visit as the unit ---------------------------------------------------------

CASES = 96


def synthetic_run(rng, sigmas, rounds, slow=None, run_drift=0.03, disturbed=0.05):
    """Visit medians of one run: a uniform drift of the whole run, a drift per
    round, each case's own visit-to-visit spread, and now and then a visit
    disturbed by a neighbour (30% slower)."""
    run = rng.normal(0, run_drift)
    per_round = rng.normal(0, 0.01, rounds)
    out = {}
    for c, sigma in enumerate(sigmas):
        factor = 1.15 if slow is not None and slow[c] else 1.0
        medians = []
        for r in range(rounds):
            m = 10.0 * (1 + c % 7) * factor * math.exp(run + per_round[r] + rng.normal(0, sigma))
            if rng.random() < disturbed:
                m *= 1.3
            medians.append(float(np.median(visit(rng, m))))
        out[c] = medians
    return out


def _sigmas(rng):
    return np.clip(np.exp(rng.normal(math.log(0.025), 0.5, CASES)), 0.005, 0.12)


@pytest.mark.parametrize("rounds", [3, 5])
def test_a_a_runs_with_drift_between_visits_and_runs_flag_at_most_5_percent(rounds):
    rng = np.random.default_rng(100 + rounds)
    flagged = total = 0
    for _ in range(12):
        sigmas = _sigmas(rng)
        a, b = synthetic_run(rng, sigmas, rounds), synthetic_run(rng, sigmas, rounds)
        result = compare_visits(a, b)
        flagged += sum(c.significant for c in result.changes.values())
        total += len(result.changes)
        assert result.shift is not None and result.shift.verdict in ("same", "slower", "faster")
    assert total == 12 * CASES
    assert flagged <= 0.05 * total, f"{flagged} of {total}"


def test_a_planted_15_percent_slowdown_is_flagged_in_90_percent_of_its_cases():
    rng = np.random.default_rng(7)
    slow = np.zeros(CASES, bool)
    slow[::4] = True  # one variant in four
    found = others = planted = 0
    for _ in range(12):
        sigmas = _sigmas(rng)
        a, b = synthetic_run(rng, sigmas, 5), synthetic_run(rng, sigmas, 5, slow=slow)
        result = compare_visits(a, b)
        found += sum(result.changes[c].verdict == "slower" for c in range(CASES) if slow[c])
        others += sum(result.changes[c].significant for c in range(CASES) if not slow[c])
        planted += int(slow.sum())
    assert found >= 0.9 * planted, f"{found} of {planted}"
    assert others <= 0.05 * (12 * CASES - planted)


def test_uniform_drift_is_discounted_up_to_the_minimum_effect_and_a_larger_shift_is_judged():
    rng = np.random.default_rng(9)
    sigmas = _sigmas(rng)
    a = synthetic_run(rng, sigmas, 5, run_drift=0, disturbed=0)
    b = synthetic_run(rng, sigmas, 5, run_drift=0, disturbed=0)
    drifted = compare_visits(a, {c: [m * 1.04 for m in v] for c, v in b.items()})  # the machine, 4% slower
    assert drifted.shift.ratio == pytest.approx(1.04, rel=0.01) and drifted.shift.verdict == "same"
    assert sum(c.significant for c in drifted.changes.values()) <= 0.05 * CASES
    library = compare_visits(a, {c: [m * 1.2 for m in v] for c, v in b.items()})  # every case 20% slower
    assert library.shift.verdict == "slower" and library.shift.ratio == pytest.approx(1.2, rel=0.02)
    slower = [c for c in library.changes.values() if c.verdict == "slower"]
    assert len(slower) >= 0.9 * CASES and np.median([c.relative for c in slower]) == pytest.approx(1.2 / 1.05, rel=0.02)
    flat = compare_visits(a, {c: [m * 1.2 for m in v] for c, v in b.items()}, adjust_shift=False)
    assert flat.shift is None and sum(c.verdict == "slower" for c in flat.changes.values()) >= 0.9 * CASES


def test_too_few_rounds_gives_no_verdict():
    one = visit_change([10.0], [20.0])
    assert one.verdict == between_runs.TOO_FEW and not one.significant and one.ratio == pytest.approx(2.0)
    assert visit_change([10.0, 10.1], [20.0]).verdict == between_runs.TOO_FEW
    assert visit_change([10.0, 10.2, 9.9], [20.0, 20.1, 19.8]).verdict == "slower"
    assert visit_change([10.0, 10.2, 9.9], [10.1, 9.8, 10.0]).verdict == "same"
    assert visit_change([10.0, 10.0], [10.0, 10.0]).verdict == "same"
    with pytest.raises(ValueError):
        visit_change([], [1.0])


def test_a_disturbed_visit_is_dropped_and_does_not_hide_a_change():
    prior = paired.VariancePrior(variance=0.02**2, df=20, items=96)
    a = [10.0, 10.1, 9.9, 10.0, 13.5]  # the last visit met a neighbour
    b = [11.6, 11.4, 11.5, 11.6, 11.5]
    assert visit_change(a, b, prior, prior).verdict == "slower"
    assert visit_change(a, b).verdict == "same"  # without the run's prior, nothing says 13.5 is odd


# --- two runs, each case judged against the variants visited beside it --------------------------

VARIANTS, SETTINGS = 5, 24  # e.g. quick.yaml with the planted variant: 5 variants, 8 settings x 3 passes


def grouped_run(rng, rounds, slow_variant=None, moment_sd=0.10, own_sd=0.035, run_drift=0.08, extra=0.15):
    """A run as a shared VM gives it: every unit (a setting's variants visited
    back to back in one round) runs at its moment's speed, which wanders by
    ``moment_sd`` between rounds and by ``run_drift`` between runs; each visit
    adds its own ``own_sd``. Keys (variant, setting) -> {round: visit median}."""
    run = rng.normal(0, run_drift)
    out = {}
    for s in range(SETTINGS):
        moments = rng.normal(0, moment_sd, rounds)
        for v in range(VARIANTS):
            factor = 1 + extra if v == slow_variant else 1.0
            out[(v, s)] = {r: 10.0 * (1 + v) * (1 + s % 4) * factor
                           * math.exp(run + moments[r] + rng.normal(0, own_sd)) for r in range(rounds)}
    return out


GROUPS = {(v, s): s for v in range(VARIANTS) for s in range(SETTINGS)}


def test_peer_normalisation_removes_the_moment_each_unit_shares():
    moments = [1.0, 1.3, 0.9]
    visits = {(v, 0): {r: (1 + v) * m for r, m in enumerate(moments)} for v in range(3)}
    normal = between_runs.peer_normalized(visits, GROUPS)
    for v in range(3):
        values = list(normal[(v, 0)].values())
        assert np.ptp(values) == pytest.approx(0.0, abs=1e-12)  # the moments, gone
        assert values[0] == pytest.approx((1 + v) * math.exp(np.mean(np.log(moments))))
    two = {k: v for k, v in visits.items() if k[0] < 2}
    assert between_runs.peer_normalized(two, GROUPS) == {}  # two variants: who moved cannot be told


@pytest.mark.parametrize("rounds", [3, 5])
def test_a_a_runs_judged_against_peers_flag_at_most_5_percent(rounds):
    rng = np.random.default_rng(200 + rounds)
    flagged = total = 0
    for _ in range(10):
        result = compare_visits(grouped_run(rng, rounds), grouped_run(rng, rounds), groups=GROUPS)
        assert result.peer_judged == set(GROUPS)  # every case has peers in both runs
        flagged += sum(c.significant for c in result.changes.values())
        total += len(result.changes)
    assert flagged <= 0.05 * total, f"{flagged} of {total}"


def test_a_planted_15_percent_slowdown_is_found_against_peers_where_the_raw_visits_cannot():
    """Moments that wander by 10% between rounds hide a 15% change from the
    raw visits of 5 rounds; judged against the peers of each unit it stands out."""
    rng = np.random.default_rng(17)
    found = raw_found = others = planted = 0
    for _ in range(10):
        a, b = grouped_run(rng, 5), grouped_run(rng, 5, slow_variant=2)
        peers, raw = compare_visits(a, b, groups=GROUPS), compare_visits(a, b)
        found += sum(peers.changes[(2, s)].verdict == "slower" for s in range(SETTINGS))
        raw_found += sum(raw.changes[(2, s)].verdict == "slower" for s in range(SETTINGS))
        others += sum(c.significant for k, c in peers.changes.items() if k[0] != 2)
        planted += SETTINGS
    assert found >= 0.9 * planted, f"{found} of {planted}"
    assert raw_found < 0.6 * planted  # what the raw visits give on such a machine
    assert others <= 0.05 * (VARIANTS - 1) * planted
    change = peers.changes[(2, 0)]
    assert change.relative == pytest.approx(1.15, rel=0.08) and change.low > 1.05


def test_a_change_under_every_variant_of_one_setting_is_reported_as_that_setting_moving():
    rng = np.random.default_rng(29)
    a = grouped_run(rng, 5, run_drift=0)
    b = {k: {r: m * (2.0 if k[1] == 3 else 1.0) for r, m in v.items()}
         for k, v in grouped_run(rng, 5, run_drift=0).items()}
    result = compare_visits(a, b, groups=GROUPS)
    moved = [k for k in result.changes if k[1] == 3]
    assert set(moved) <= result.peer_judged  # each against the others: none of them changed alone
    assert not any(result.changes[k].significant for k in moved)
    assert 3 in result.moved_together  # the setting as a whole, where a reader sees it
    assert result.moved_together[3].ratio == pytest.approx(2.0, rel=0.1)  # the moments of 5 rounds: +-6%
    assert all(abs(math.log(s.ratio)) < 0.2 for g, s in result.group_shifts.items() if g != 3)


def test_a_case_is_judged_against_the_change_of_the_others_not_its_own():
    changes = [0.0, 0.02, -0.02, 0.04, 0.15]  # the last one slowed down; the others drifted a little
    a = {(v, 0): [10.0, 10.0, 10.0] for v in range(5)}
    b = {(v, 0): [10.0 * math.exp(c)] * 3 for v, c in enumerate(changes)}
    others = between_runs.shifts_of_others(a, b, GROUPS)
    assert math.log(others[(4, 0)].ratio) == pytest.approx(0.01)  # the median of the four others
    assert math.log(others[(0, 0)].ratio) == pytest.approx(0.03)  # the others include the one that changed
    assert others[(4, 0)].peers == 4
    whole = between_runs.peer_shifts(a, b, GROUPS)[0]
    assert math.log(whole.ratio) == pytest.approx(0.02)  # the setting as a whole, itself included
    # The spread of the others is never taken below the one pooled over the groups.
    assert others[(4, 0)].variance >= math.pi / 2 * (1.4826 * 0.02) ** 2 / 4 - 1e-12


def test_too_few_cases_for_a_common_shift_are_judged_raw():
    rng = np.random.default_rng(31)
    a = {k: v for k, v in grouped_run(rng, 5, run_drift=0).items() if k[1] < 2}  # 10 cases
    b = {k: {r: m * 2 for r, m in v.items()} for k, v in a.items()}
    result = compare_visits(a, b, groups=GROUPS)
    assert result.shift is None and not result.peer_judged
    assert all(c.verdict == "slower" for c in result.changes.values())


def test_a_change_under_every_variant_shows_in_the_common_shift_not_in_the_cases():
    rng = np.random.default_rng(23)
    a = grouped_run(rng, 5, run_drift=0)
    b = {k: {r: m * 1.2 for r, m in v.items()} for k, v in grouped_run(rng, 5, run_drift=0).items()}
    result = compare_visits(a, b, groups=GROUPS)
    assert sum(c.significant for c in result.changes.values()) <= 0.05 * len(result.changes)
    assert result.shift.verdict == "slower" and result.shift.ratio == pytest.approx(1.2, rel=0.05)
    assert np.median([c.ratio for c in result.changes.values()]) == pytest.approx(1.2, rel=0.05)  # as measured


# --- a published table ---------------------------------------------------------------------------

def test_spearman_interval_resamples_rounds():
    rng = np.random.default_rng(2)
    published = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}
    clear = {m: list(v * np.exp(rng.normal(0, 0.02, 5))) for m, v in published.items()}
    rho = spearman_interval(clear, published)
    assert rho.estimate == pytest.approx(1.0) and rho.low == pytest.approx(1.0) and rho.method == "bootstrap-rounds"
    close = {m: list((v if m not in "cd" else 3.5) * np.exp(rng.normal(0, 0.05, 5))) for m, v in published.items()}
    rho = spearman_interval(close, published)
    assert -1 <= rho.low < rho.estimate <= rho.high <= 1 and rho.low < 1.0
    assert spearman_interval({m: [v] for m, v in published.items()}, published).method == "none"
    assert spearman_interval({"a": [1.0, 2.0]}, published).method == "none"

"""attnbench.stats.paired on synthetic runs with a known answer: paired ratios and
their intervals, the variance prior, Spearman's rank correlation and the bootstrap
interval of it."""

import math

import numpy as np
import pytest

from attnbench.stats import paired
from attnbench.stats.paired import Interval, estimate_prior, paired_ratio, ratio_prior, spearman, spearman_interval
from tests.helpers import visit

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


def test_spearman_against_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d² = 0 + 1 + 1 + 0 + 0 -> 1 - 6·2 / (5·24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    # ties get average ranks (scipy agrees)
    from scipy.stats import spearmanr

    x, y = [1, 2, 2, 3, 5, 4], [2, 1, 4, 4, 6, 5]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1], [2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


# --- a published table ---------------------------------------------------------------------------

@pytest.mark.slow
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

"""attnbench.stats.between_runs on synthetic runs with a known answer: the test
between two runs at the visit level (A/A flags few cases, a planted 15% slowdown
is found), and each case judged against the variants visited beside it."""

import math

import numpy as np
import pytest

from attnbench.stats import between_runs, paired
from attnbench.stats.between_runs import compare_visits, visit_change
from tests.helpers import visit

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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

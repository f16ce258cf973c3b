"""The verdict on a run's timings (attnbench.analysis.verdict): each criterion
at its thresholds, the worst one deciding, and its reasons in words."""

import pandas as pd
import pytest

from attnbench.analysis.verdict import (
    NOISY,
    TRUSTWORTHY,
    UNJUDGED,
    UNRELIABLE,
    run_verdict,
)
from tests.helpers import ROOT


def meta(share=0.01, matmul=(100e9, 105e9), bandwidth=(20e9, 21e9)) -> dict:
    start = {"device": "cpu", "dtype": "float32", "matmul_flops": matmul[0], "bandwidth_bytes_per_s": bandwidth[0]}
    end = {**start, "matmul_flops": matmul[1], "bandwidth_bytes_per_s": bandwidth[1]}
    return {"noise": {"other_share": share, "cores": 2}, "calibration": {"start": [start], "end": [end]}}


def rows(spreads) -> pd.DataFrame:
    return pd.DataFrame({"status": ["ok"] * len(spreads), "round_spread": spreads})


QUIET = rows([0.05, 0.09, 0.14])


def test_a_quiet_run_is_trustworthy():
    verdict = run_verdict(meta(), QUIET)
    assert verdict.level == TRUSTWORTHY and verdict.reasons == []
    assert verdict.headline.startswith("timings trustworthy")


@pytest.mark.parametrize(("share", "level"), [(0.09, TRUSTWORTHY), (0.15, NOISY), (0.47, UNRELIABLE)])
def test_other_processes_share_of_the_cores(share, level):
    verdict = run_verdict(meta(share=share), QUIET)
    assert verdict.level == level
    if level != TRUSTWORTHY:
        assert f"{share:.0%} of the cores" in verdict.reasons[0]


ONE_ROUND = rows([None, None])


@pytest.mark.parametrize(("end", "level"), [(115e9, TRUSTWORTHY), (130e9, NOISY), (253e9, UNRELIABLE),
                                            (45e9, UNRELIABLE)])  # halved: 122% slower is 'beyond 100%'
def test_a_calibration_that_moved_during_a_run_of_one_round(end, level):
    verdict = run_verdict(meta(matmul=(100e9, end)), ONE_ROUND)
    assert verdict.level == level
    if level != TRUSTWORTHY:
        assert "matmul rate moved from 100 GFLOP/s" in verdict.reasons[0]


@pytest.mark.parametrize(("end", "level"), [(115e9, TRUSTWORTHY), (130e9, TRUSTWORTHY), (190e9, TRUSTWORTHY),
                                            (253e9, NOISY), (45e9, NOISY)])
def test_with_rounds_a_calibration_that_moved_is_said_and_the_rounds_judge(end, level):
    # Quiet runs of the VM moved by up to 90% while their rounds agreed (docs/statistics.md).
    verdict = run_verdict(meta(matmul=(100e9, end)), QUIET)
    assert verdict.level == level
    said = verdict.reasons if level == NOISY else verdict.notes
    assert (end == 115e9) is (not said)  # within 20%: nothing to say
    if said:
        assert "matmul rate moved from 100 GFLOP/s" in said[0]
        assert ("note: the matmul rate moved" in verdict.headline) is (level == TRUSTWORTHY)
    if level == TRUSTWORTHY and said:
        assert verdict.headline.startswith("timings trustworthy: the rounds agree (note:")
        assert verdict.to_dict()["notes"] == said


def test_a_busy_run_is_unreliable_whatever_its_calibrations_say():
    verdict = run_verdict(meta(share=0.51, matmul=(100e9, 76e9)), rows([0.57, 0.6, 0.5]))
    assert verdict.level == UNRELIABLE and "51% of the cores" in verdict.reasons[0]


@pytest.mark.parametrize(("spread", "level"), [(0.15, TRUSTWORTHY), (0.3, NOISY), (1.1, UNRELIABLE)])
def test_visits_that_spread_between_rounds(spread, level):
    verdict = run_verdict(meta(), rows([spread] * 3 + [0.01]))
    assert verdict.level == level


def test_a_figure_above_the_measured_peak_makes_the_run_unreliable():
    verdict = run_verdict(meta(), QUIET, pd.Series([0.5, 1.09, 0.8]))
    assert verdict.level == UNRELIABLE and "faster than the measured matmul peak (up to 109%)" in verdict.reasons[0]
    assert run_verdict(meta(), QUIET, pd.Series([0.5, 0.99])).level == TRUSTWORTHY


def test_the_worst_criterion_decides_and_every_reason_is_said():
    verdict = run_verdict(meta(share=0.47, bandwidth=(20e9, 45e9)), rows([0.3, 0.3]))
    assert verdict.level == UNRELIABLE and verdict.unreliable
    assert "47% of the cores" in verdict.reasons[0]  # the worst first
    assert any("copy bandwidth" in r for r in verdict.reasons) and any("between rounds" in r for r in verdict.reasons)
    assert verdict.to_dict() == {"level": UNRELIABLE, "reasons": verdict.reasons, "notes": []}


def test_a_run_that_recorded_nothing_is_unjudged():
    assert run_verdict({}, pd.DataFrame({"status": ["ok"], "round_spread": [None]})).level == UNJUDGED


REFERENCE = ROOT / "results" / "reference-cpu"


@pytest.mark.parametrize("name", sorted(p.name for p in REFERENCE.iterdir() if (p / "run.json").exists()))
def test_every_committed_reference_reads_trustworthy(name):
    from attnbench.report.build import build_report

    verdict = build_report(REFERENCE / name).verdict
    assert verdict.level == TRUSTWORTHY, verdict.headline
    first_line = (REFERENCE / name / "report.txt").read_text().splitlines()[0]
    assert first_line.startswith("timings trustworthy"), "report.txt predates the verdict: regenerate it"

"""Published tables (published.py, agreement.py): a model measured under two labels (LRA's
Reformer and the paper-default one) is correlated with the table both ways; the
quality scores (LRA Table 1) load apart from the efficiency tables."""

import pytest

from attnbench.analysis.agreement import alternative_choices, published_correlation
from attnbench.report.build import published_section
from attnbench.report.cells import agreement_lines
from attnbench.store.published import load_published, published_names
from tests.test_analysis import frame_of

NS = [1024, 2048, 3072, 4096]


def lra_like_run(reformer_paper_speed: float):
    """Times that rank exactly like LRA's Table 2, plus a second Reformer label whose
    time at every N is softmax's divided by ``reformer_paper_speed``."""
    table = load_published("lra_table2")
    pub = table.frame.set_index(["variant", "seq_len"])["steps_per_s"]
    times = {v: [1000 / pub[(v, n)] for n in NS] for v in dict.fromkeys(table.frame["variant"])}
    times["reformer-paper"] = [t / reformer_paper_speed for t in times["softmax"]]
    return table, frame_of(times, ns=NS, variants={"reformer-paper": "reformer"})


def test_a_model_measured_twice_is_correlated_both_ways():
    table, frame = lra_like_run(reformer_paper_speed=20.0)  # far faster than every model
    default = published_correlation(frame, table)
    assert default.rho == pytest.approx(1.0) and "reformer" in set(default.pairs["label"])
    assert alternative_choices(frame, table) == [{"reformer": "reformer-paper"}]
    other = published_correlation(frame, table, chosen={"reformer": "reformer-paper"})
    assert "reformer-paper" in set(other.pairs["label"]) and "reformer" not in set(other.pairs["label"])
    assert other.models == default.models and other.rho < default.rho
    lines = agreement_lines(published_section(frame, table))
    assert len(lines) == 2 and lines[1].startswith("with reformer-paper as reformer: ")
    assert f"{other.rho:+.2f}" in lines[1] and f"{default.rho:+.2f}" in lines[0]


def test_one_label_per_model_has_no_alternatives():
    table, frame = lra_like_run(1.0)
    frame = frame[frame["label"] != "reformer-paper"]
    assert alternative_choices(frame, table) == [] and len(agreement_lines(published_section(frame, table))) == 1


def test_quality_scores_are_not_an_efficiency_table():
    assert "lra_table1" not in published_names() and "lra_table2" in published_names()
    scores = load_published("lra_table1", kind="scores")
    assert scores.meta["kind"] == "scores" and "2011.04006" in scores.citation
    with pytest.raises(ValueError, match="unknown published table"):
        load_published("lra_table1")

"""Agreement with a published table (attnbench.analysis.agreement): the rank
correlation at 4K, the side-by-side figures, and a model measured under two
labels (LRA's Reformer and the paper-default one) correlated with the table
both ways."""

import pytest

from attnbench.analysis.agreement import alternative_choices, published_correlation, published_side_by_side
from attnbench.report.build import published_section
from attnbench.report.cells import agreement_lines
from attnbench.store.published import load_published
from tests.helpers import frame_of


def test_published_correlation_at_4k():
    table = load_published("lra_table2")
    lra = table.frame[table.frame["seq_len"] == 4096].set_index("variant")["steps_per_s"]
    ns = [1024, 2048, 3072, 4096]
    # a run whose times are LRA's (1 / steps/s) at every N ranks exactly like LRA: rho = 1
    pub = table.frame.set_index(["variant", "seq_len"])["steps_per_s"]
    times = {v: [1000 / pub[(v, n)] for n in ns] for v in lra.index}
    frame = frame_of(times, ns=ns)
    agreement = published_correlation(frame, table)
    assert agreement.seq_len == 4096 and agreement.models == 9 and agreement.rho == pytest.approx(1.0)
    assert set(agreement.pairs["label"]) == set(lra.index)
    # reverse the ranking of the measured speeds: rho = -1 (ties in LRA's row aside)
    rev = {v: [1.0 / t for t in ts] for v, ts in times.items()}
    assert published_correlation(frame_of(rev, ns=ns), table).rho < -0.95
    # only some models, labelled differently: matched through the variant column
    some = frame_of({"base": times["softmax"], "lin": times["linear"], "perf": times["performer"]}, ns=ns,
                    variants={"base": "softmax", "lin": "linear", "perf": "performer"})
    agreement = published_correlation(some, table)
    assert agreement.models == 3 and list(agreement.pairs["label"]) == ["base", "lin", "perf"]
    # without the baseline model, or with the wrong pass, there is nothing to correlate
    assert published_correlation(frame_of({"linear": times["linear"]}, ns=ns), table) is None
    assert published_correlation(frame_of(times, ns=ns, pass_name="forward"), table) is None
    # the largest common N when 4K was not measured
    short = frame_of({v: ts[:2] for v, ts in times.items()}, ns=ns[:2])
    assert published_correlation(short, table).seq_len == 2048


def test_side_by_side_relative_figures():
    table = load_published("lra_table2")
    ns = [1024, 4096]
    frame = frame_of({"softmax": [10.0, 100.0], "linear": [5.0, 10.0]}, ns=ns,
                     mem={"softmax": [100.0, 1000.0], "linear": [50.0, 100.0]})
    both = published_side_by_side(frame, table).set_index(["label", "seq_len"])
    assert both.loc[("linear", 4096), "measured_speedup"] == pytest.approx(10.0)
    assert both.loc[("linear", 4096), "published_speedup"] == pytest.approx(7.8 / 1.4, abs=1e-3)
    assert both.loc[("linear", 4096), "measured_mem_ratio"] == pytest.approx(0.1)
    assert both.loc[("linear", 4096), "published_mem_ratio"] == pytest.approx(1.03 / 9.48)
    assert both.loc[("softmax", 1024), "measured_speedup"] == pytest.approx(1.0)


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

"""Published tables (attnbench.store.published): LRA's Table 2 with its citation; the
quality scores (LRA Table 1) load apart from the efficiency tables."""

import pytest

from attnbench.store.published import load_published, published_names


def test_published_lra_table2_loads_with_its_citation():
    assert "lra_table2" in published_names()
    table = load_published("lra_table2")
    assert "2011.04006" in table.citation and table.pass_name == "forward_backward"
    assert table.baseline_variant == "softmax"
    assert len(table.models()) == 9 and len(table.frame) == 36
    f = table.frame.set_index(["variant", "seq_len"])
    assert f.loc[("softmax", 4096), "steps_per_s"] == 1.4 and f.loc[("softmax", 4096), "memory_gb"] == 9.48
    assert f.loc[("performer", 4096), "steps_per_s"] == 8.0
    assert f.loc[("performer", 4096), "relative_speed"] == pytest.approx(8.0 / 1.4, abs=1e-3)
    assert f.loc[("linformer", 4096), "memory_gb"] == 0.99
    assert f.loc[("reformer", 1024), "steps_per_s"] == 4.4
    # relative speed is steps/s over the Transformer's, and agrees with the paper's brackets
    for (variant, n), r in f.iterrows():
        base = f.loc[("softmax", n), "steps_per_s"]
        assert r["relative_speed"] == pytest.approx(r["steps_per_s"] / base, abs=1e-3)
        assert abs(r["printed_speedup"] - r["relative_speed"]) <= 0.06, (variant, n)
    with pytest.raises(ValueError, match="known: lra_table2"):
        load_published("lra_table3")


def test_quality_scores_are_not_an_efficiency_table():
    assert "lra_table1" not in published_names() and "lra_table2" in published_names()
    scores = load_published("lra_table1", kind="scores")
    assert scores.meta["kind"] == "scores" and "2011.04006" in scores.citation
    with pytest.raises(ValueError, match="unknown published table"):
        load_published("lra_table1")

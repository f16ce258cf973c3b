"""The summaries report prints of quality records (attnbench.analysis.quality)."""

from __future__ import annotations

import math

import pytest

from attnbench.analysis.quality import approx_table, measured_scores, mqar_summary
from attnbench.quality import NOT_AN_APPROXIMATION


def test_summaries_of_records() -> None:
    def approx(label: str, regime: str, n: int, err: float | None, status: str = "ok") -> dict:
        return {"kind": "approx", "label": label, "variant": label, "regime": regime, "seq_len": n,
                "seed": 0, "status": status, "output_error": err, "row_error": err, "row_tv": err,
                "ref_entropy": 1.0, "params": {}}

    def mqar(label: str, seed: int, acc: float | None, status: str = "ok") -> dict:
        return {"kind": "mqar", "label": label, "variant": label, "seed": seed, "status": status,
                "accuracy": acc, "causal": True, "train_s": 2.0, "params": {}, "config": {"pairs": 4}}

    records = [approx("softmax", "peaked", 256, 0.0), approx("local", "peaked", 256, 0.5),
               approx("local", "gaussian", 256, 0.25), approx("aft", "gaussian", 256, None, NOT_AN_APPROXIMATION),
               mqar("softmax", 0, 1.0), mqar("softmax", 1, 0.98), mqar("linear", 0, 0.3), mqar("linear", 1, 0.4),
               mqar("lightconv", 0, 0.2), mqar("lightconv", 1, 0.25), mqar("bad", 0, None, "diverged")]
    table = approx_table(records)
    assert table.columns == (("gaussian", 256), ("peaked", 256))
    assert table.cells[("local", "gaussian", 256)].output_error == 0.25
    assert table.cells[("aft", "gaussian", 256)].status == NOT_AN_APPROXIMATION
    assert ("aft", "peaked", 256) not in table.cells
    assert table.to_dict()["rows"][2]["cells"][1] is None
    summary = mqar_summary(records)
    rows = {r.label: r for r in summary.rows}
    assert rows["softmax"].mean == pytest.approx(0.99) and rows["softmax"].low == 0.98
    assert rows["bad"].mean is None and rows["bad"].statuses == {0: "diverged"}
    assert summary.seeds == (0, 1) and math.isclose(summary.seed_rank_correlation, 1.0)
    assert approx_table([]) is None and mqar_summary(records[:4]) is None
    assert measured_scores(records) == pytest.approx({"softmax": 0.99, "linear": 0.35, "lightconv": 0.225})
    assert measured_scores(records[:4]) == {}

"""FLOPs of a case (attnbench.bench.worker.flops): from register(flops=...), else
from torch's flop counter, else left empty (never 0 in the CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

import attnbench
import attnbench.variants
from attnbench.store.results import records_frame, write_csv
from attnbench.suite.load import parse
from attnbench.variants.registry import unregister
from tests.helpers import CUSTOM_SUITE, NoFlopsLinear, passes_of

# Tiny tensors: one thread is faster and steadier on a shared machine (conftest).
pytestmark = pytest.mark.usefixtures("one_thread")


class _Scale(nn.Module):
    """Element-wise only: nothing the flop counter counts."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


@pytest.fixture
def flops_variants():
    attnbench.register("t-flops-fn", family="custom",
                       flops=lambda batch, seq_len, dim, width: 11 * batch * seq_len * dim * width)(NoFlopsLinear)
    attnbench.register("t-flop-counter", family="custom")(NoFlopsLinear)
    attnbench.register("t-no-flops", family="custom")(_Scale)
    yield
    for name in ("t-flops-fn", "t-flop-counter", "t-no-flops"):
        unregister(name)


@pytest.mark.slow
def test_flops_come_from_register_else_the_flop_counter_else_stay_empty(flops_variants, tmp_path: Path):
    variants = ("  - name: t-flops-fn\n    params: {width: 3}\n  - t-flop-counter\n  - t-no-flops\n")
    suite = CUSTOM_SUITE.format(causal="false", variants=variants)
    results = passes_of(suite)
    passes = {label: [p for kind, p in m if kind == "pass"] for label, m in results.items()}
    fn = {p["pass"]: (p["flops"], p["flops_source"]) for p in passes["t-flops-fn"]}
    assert fn == {"forward": (11 * 16 * 32 * 3, "analytic"), "forward_backward": (3 * 11 * 16 * 32 * 3, "analytic")}
    counted = {p["pass"]: (p["flops"], p["flops_source"]) for p in passes["t-flop-counter"]}
    assert counted["forward"] == (2 * 16 * 32 * 32, "flop_counter")
    assert counted["forward_backward"] == (3 * 2 * 16 * 32 * 32, "flop_counter")
    assert {(p["flops"], p["flops_source"]) for p in passes["t-no-flops"]} == {(None, None)}
    assert all(p["status"] == "ok" for ps in passes.values() for p in ps)
    # In the CSV the uncounted variant's flops are empty, never 0.
    records = []
    for case in parse(suite).cases():
        record = {"schema": 1, "case_id": case.case_id, "case": case.to_dict(), "status": "ok",
                  "passes": [p for kind, p in results[case.label] if kind == "pass"]}
        records.append(record)
    write_csv(records_frame(records, "r"), tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    by_label = {(r["label"], r["pass"]): r for r in rows}
    assert by_label[("t-no-flops", "forward")]["flops"] == "" and by_label[("t-no-flops", "forward")]["tflops"] == ""
    assert by_label[("t-no-flops", "forward")]["flops_source"] == ""
    assert by_label[("t-flop-counter", "forward")]["flops_source"] == "flop_counter"
    assert by_label[("t-flops-fn", "forward")]["flops"] == str(11 * 16 * 32 * 3)

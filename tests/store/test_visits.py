"""attnbench.store.visits: visit records merged into case records."""

import numpy as np
import pytest

from attnbench.store.visits import merge_visits, round_spread, visit_medians
from tests.helpers import record


def test_visits_merge_into_one_case_record_with_rounds():
    records = [record("softmax", 64, {"forward": [1.0, 1.1]}, rnd=0, mem=4.0),
               record("linear", 64, {"forward": [0.5]}, rnd=0),
               record("softmax", 64, {"forward": [2.0, 2.2]}, rnd=1),
               record("softmax", 64, {"forward": "timeout"}, rnd=2),
               record("softmax", 64, {"forward": [1.2, 1.3]}, rnd=1)]  # a resumed run re-ran round 1: it wins
    merged = {r["case"]["label"]: r for r in merge_visits(records)}
    soft = merged["softmax"]
    assert soft["rounds"] == [0, 1, 2] and soft["status"] == "timeout"
    p = soft["passes"][0]
    assert p["round_ids"] == [0, 1, 2] and p["rounds_ms"] == [[1.0, 1.1], [1.2, 1.3], []]
    assert p["samples_ms"] == [1.0, 1.1, 1.2, 1.3] and p["status"] == "timeout" and p["peak_mem_mib"] == 4.0
    assert visit_medians(p) == pytest.approx([1.05, 1.25])
    assert round_spread(p) == pytest.approx(np.std(np.log([1.05, 1.25]), ddof=1))
    assert merged["linear"]["rounds"] == [0] and round_spread(merged["linear"]["passes"][0]) is None
    # a run from before rounds: one visit, round 0
    old = merge_visits([record("softmax", 64, {"forward": [1.0, 2.0, 3.0]})])[0]
    assert old["rounds"] == [0] and old["passes"][0]["rounds_ms"] == [[1.0, 2.0, 3.0]]

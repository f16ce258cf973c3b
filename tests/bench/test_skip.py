"""What the sweep skips (attnbench.bench.skip): a case whose estimated memory exceeds
what is free, and later visits of a case whose first visit failed."""

from __future__ import annotations

from dataclasses import replace

import psutil

from attnbench.bench.skip import skip_reason
from attnbench.suite import load as suite_mod
from tests.helpers import OK_SUITE, rounds_suite, small_suite


def test_skip_when_the_estimate_exceeds_free_memory(monkeypatch):
    suite = suite_mod.parse(small_suite(**OK_SUITE))
    small, large = [c for c in suite.cases() if c.label == "softmax" and c.heads == 2]
    done = [{"case": small.to_dict(), "status": "ok",
             "passes": [{"pass": "forward", "status": "ok", "peak_mem_mib": 600.0}]}]

    class Memory:
        available = 2048 * (1 << 20)

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    reason = skip_reason(large, done)  # 600 MiB x (128/64)^2 x 1.2 > 2048 - 1024 margin
    assert reason and "estimated peak memory" in reason and "exceeds the available" in reason
    Memory.available = 64 * (1 << 30)
    assert skip_reason(large, done) is None


def test_later_visits_follow_the_first():
    from attnbench.bench.skip import skip_reason

    case = rounds_suite().cases()[0]
    later = replace(case, round=1)

    def first(status, passes):
        return {"case_id": case.case_id, "case": case.to_dict(), "round": 0, "status": status, "error": "why",
                "passes": [{"pass": p, "status": s} for p, s in passes.items()]}

    assert skip_reason(later, [first("ok", {"forward": "ok", "backward": "ok"})]) is None
    # a pass that cannot run here (FlexAttention's backward on CPU): the others are still visited
    assert skip_reason(later, [first("skipped", {"forward": "ok", "backward": "skipped"})]) is None
    assert skip_reason(later, [first("skipped", {})]) == "why"
    assert "round 1 ended timeout" in skip_reason(later, [first("timeout", {"forward": "ok"})])


def test_a_first_n_whose_largest_tensor_cannot_fit_is_skipped_with_its_estimate():
    from attnbench.bench import skip
    from attnbench.model import Case

    def case(variant: str) -> Case:
        return Case(suite="t", passes=("forward",), variant=variant, label=variant, params={}, batch=1,
                    seq_len=131072, heads=4, dim=256, dtype="float32", device="cpu", causal=False)

    assert skip.largest_tensor_mib(case("softmax")) == 4 * 131072 * 131072 * 4 / 2**20  # the scores, on meta
    reason = skip.skip_reason(case("softmax"), [])
    assert reason and "estimated peak memory 256.0 GiB exceeds" in reason
    assert skip.skip_reason(case("linear"), []) is None

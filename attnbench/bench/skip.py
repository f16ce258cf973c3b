"""The skip policy: which cases not to run, judged from the cases of their
series (same everything but N) that finished before them.

A series runs from small to large N. Once one N ran out of memory, the larger
ones are skipped; on CPU a case whose extrapolated peak memory exceeds what is
free (after ``limits.memory_margin_mib``) is skipped too. With rounds, the
policy decides a case's first visit; its later visits follow that one.
"""

from __future__ import annotations

import math
from typing import Any

from attnbench.model import MIB, Case, Status, series_of


def estimated_peak_mib(case: Case, previous: list[dict[str, Any]]) -> float | None:
    """Extrapolate the peak memory of ``case`` from finished cases of its series
    (same everything but N): the growth exponent is fitted from the last two
    points, or taken as 2 (quadratic, the worst of our variants) from one."""
    points = []
    for record in previous:
        c = record["case"]
        peaks = [p["peak_mem_mib"] for p in record.get("passes", [])
                 if p["status"] == Status.OK and p.get("peak_mem_mib") is not None]
        if peaks and c["seq_len"] < case.seq_len:
            points.append((c["seq_len"], max(peaks)))
    if not points:
        return None
    points.sort()
    n1, m1 = points[-1]
    exponent = 2.0
    if len(points) >= 2:
        n0, m0 = points[-2]
        if m0 > 0 and m1 > 0 and n1 > n0:
            exponent = min(max(math.log(m1 / m0) / math.log(n1 / n0), 1.0), 3.0)
    return m1 * (case.seq_len / n1) ** exponent * 1.2


def skip_reason(case: Case, done: list[dict[str, Any]]) -> str | None:
    """Why ``case`` should not run, given the finished records ``done`` (one per
    visit); None to run it. A later visit follows the case's earlier ones: it
    runs when they all succeeded, and is skipped when one did not (a failure
    repeats, and a timeout would cost its limit in every round)."""
    earlier = [r for r in done if r.get("case_id") == case.case_id and r.get("round", 0) != case.round]
    if earlier:
        failed = [r for r in earlier if r["status"] not in (Status.OK, Status.SKIPPED)]
        if failed:
            first = min(failed, key=lambda r: r.get("round", 0))
            return f"skipped: its visit in round {first.get('round', 0) + 1} ended {first['status']}"
        ran = any(p["status"] == Status.OK for r in earlier for p in r.get("passes", []))
        if not ran:  # skipped whole: the reason holds for this visit too
            return next((r.get("error") for r in earlier if r.get("error")), None) or "skipped"
        return None  # some passes ran (others cannot run here): visit again
    key = case.series
    series = [r for r in done if series_of(r["case"]) == key]
    for record in series:
        if record["status"] == Status.OOM and record["case"]["seq_len"] < case.seq_len:
            return f"skipped: N={record['case']['seq_len']} of this series ran out of memory"
    if case.device == "cpu":
        import psutil

        estimate = estimated_peak_mib(case, series)
        available = psutil.virtual_memory().available / MIB - case.limits.memory_margin_mib
        if estimate is not None and estimate > available:
            return (f"skipped: estimated peak memory {estimate:,.0f} MiB exceeds the available "
                    f"{available:,.0f} MiB (after a {case.limits.memory_margin_mib:,.0f} MiB margin)")
    return None

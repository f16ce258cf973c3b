"""The skip policy: which cases not to run, judged from the cases of their
series (same everything but N) that finished before them.

A series runs from small to large N. Once one N ran out of memory, the larger
ones are skipped; on CPU a case whose extrapolated peak memory exceeds what is
free (after ``limits.memory_margin_mib``) is skipped too.
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
        peaks = [p.get("peak_mem_mib") or 0.0 for p in record.get("passes", []) if p["status"] == Status.OK]
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
    """Why ``case`` should not run, given the finished records ``done``; None to run it."""
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

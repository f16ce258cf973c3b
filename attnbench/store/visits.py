"""Visits and what is built from them.

A run with ``timing.rounds`` R visits every case R times; each visit appends
its own record to cases.jsonl, with its ``round``. This module merges a case's
visits into one case record (the shape report, plots and results.csv read),
and reads the rounds back: each visit's median, two cases' samples aligned
round by round (the analysis pairs them: ``attnbench.analysis``).

A record without ``round`` (a run made before rounds existed) is one visit,
round 0.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from attnbench.model import worst_status
from attnbench.stats import paired


def visit_round(record: dict[str, Any]) -> int:
    return int(record.get("round", 0) or 0)


def _worst(statuses: list[str]) -> str:
    return worst_status(statuses)


def latest_visits(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case and round, the last record (a resumed run may hold an earlier
    attempt of the same visit), in the order of first appearance."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        latest[(record["case_id"], visit_round(record))] = record
    return list(latest.values())


def merge_visits(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per case from its visit records, in the suite's order
    (``case_index``, which the sweep writes) or else the order cases first
    appear; records merged already pass through. The merged record keeps the first visit's fields (case, family,
    parameters, device name) and has ``rounds`` (the rounds visited) and
    ``status`` (the worst over visits). Each pass has ``samples_ms`` (every
    visit's samples, in round order), ``rounds_ms`` (the samples of each
    visited round, aligned with ``round_ids``; empty where that visit failed),
    ``rounds_turns`` (each visit's turns token, None where it was not
    sampled in turns),
    the peak memory of the first visit that measured it, and the worst status
    with its error."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for record in latest_visits(records):
        by_case.setdefault(record["case_id"], []).append(record)
    merged = []
    for visits in by_case.values():
        if "rounds" in visits[-1]:  # merged already
            merged.append(visits[-1])
            continue
        visits = sorted(visits, key=visit_round)
        first = visits[0]
        out = {k: v for k, v in first.items() if k not in ("passes", "round", "status", "error")}
        out["rounds"] = [visit_round(v) for v in visits]
        out["status"] = _worst([v.get("status", "ok") for v in visits])
        errors = [v.get("error") for v in visits if v.get("status") == out["status"] and v.get("error")]
        out["error"] = errors[0] if errors else None
        out["passes"] = [_merge_pass(name, visits) for name in first["case"]["passes"]
                         if any(name in passes_by_name(v) for v in visits)]
        merged.append(out)
    # In the suite's order (the sweep numbers the cases; rounds visit them shuffled).
    position = {id(r): i for i, r in enumerate(merged)}
    return sorted(merged, key=lambda r: (r.get("case_index") is None, r.get("case_index") or 0, position[id(r)]))


def passes_by_name(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["pass"]: p for p in record.get("passes", [])}


def _merge_pass(name: str, visits: list[dict[str, Any]]) -> dict[str, Any]:
    results = [(visit_round(v), passes_by_name(v).get(name)) for v in visits]
    present = [(r, p) for r, p in results if p is not None]
    statuses = [p["status"] for _, p in present]
    # A visit that ended before this pass shares its own fate.
    statuses += [v.get("status", "error") for v, (_, p) in zip(visits, results, strict=True) if p is None]
    status = _worst(statuses)
    out = dict(present[0][1])
    out["status"] = status
    out["error"] = next((p.get("error") for _, p in present if p["status"] == status and p.get("error")),
                        out.get("error") if status != "ok" else None)
    out["round_ids"] = [r for r, _ in results]
    out["rounds_ms"] = [list(p.get("samples_ms") or []) if p is not None and p["status"] == "ok" else []
                        for _, p in results]
    out["rounds_turns"] = [p.get("turns") if p is not None else None for _, p in results]
    out["samples_ms"] = [x for samples in out["rounds_ms"] for x in samples]
    for key in ("peak_mem_mib", "peak_reserved_mib"):
        out[key] = next((p.get(key) for _, p in present if p.get(key) is not None), None)
    return out


def visit_medians(pass_result: dict[str, Any]) -> list[float]:
    """The median of each visit that has samples."""
    return [statistics.median(s) for s in pass_result.get("rounds_ms") or [] if s]


def visit_medians_by_round(pass_result: dict[str, Any]) -> dict[int, float]:
    """Round -> the median of that visit, for the visits that have samples."""
    return {r: statistics.median(s) for r, s in zip(pass_result.get("round_ids") or [],
                                                   pass_result.get("rounds_ms") or [], strict=False) if s}


def round_spread(pass_result: dict[str, Any]) -> float | None:
    """Standard deviation of the log visit medians (about the relative spread
    between rounds); None with fewer than two visits."""
    medians = [m for m in visit_medians(pass_result) if m > 0]
    if len(medians) < 2:
        return None
    return float(np.std(np.log(medians), ddof=1))


# --- paired ratios against a baseline ------------------------------------------------


def paired_rounds(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[int], list[list[float]], list[list[float]],
                                                                  list[bool]]:
    """Per round both passes visited (merged pass results): the round, the two
    sides' samples, and whether the two were sampled in the same turns (the
    same turns token; a record made before tokens has none: medians then)."""
    def by_round(p: dict[str, Any]) -> dict[int, tuple[list[float], str | None]]:
        ids, samples = p.get("round_ids") or [], p.get("rounds_ms") or []
        turns = p.get("rounds_turns") or [None] * len(ids)
        return {r: (s, t) for r, s, t in zip(ids, samples, turns, strict=True)}

    ra, rb = by_round(a), by_round(b)
    common = sorted(ra.keys() & rb.keys())
    together = [ra[r][1] is not None and ra[r][1] == rb[r][1] for r in common]
    return common, [ra[r][0] for r in common], [rb[r][0] for r in common], together


def round_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[int, float]:
    """Round -> the ratio of pass ``a`` to pass ``b`` in that round
    (``paired.round_log_ratio``: turn by turn where sampled in turns), for the
    rounds where both have samples."""
    rounds, num, den, together = paired_rounds(a, b)
    logs = {r: paired.round_log_ratio(x, y, t) for r, x, y, t in zip(rounds, num, den, together, strict=True)}
    return {r: math.exp(v) for r, v in logs.items() if math.isfinite(v)}


def aligned_values(a: dict[str, Any], b: dict[str, Any], key: str) -> tuple[list[list[float]], list[list[float]]]:
    """Per round both visited, the two sides' figure (a memory figure of the
    round that measured it: ``key``)."""
    va, vb = a.get(key), b.get(key)
    if va is None or vb is None or _nan(va) or _nan(vb) or va <= 0 or vb <= 0:
        return [], []
    return [[float(va)]], [[float(vb)]]


def _nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True

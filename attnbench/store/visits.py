"""Visits and what is built from them.

A run with ``timing.rounds`` R visits every case R times; each visit appends
its own record to cases.jsonl, with its ``round``. This module merges a case's
visits into one case record (the shape report, plots and results.csv read),
and computes from the rounds the paired speed-ups and memory ratios against a
baseline, with intervals, and the visit-level comparison of two runs (see
``attnbench.stats.paired`` for the statistics).

A record without ``round`` (a run made before rounds existed) is one visit,
round 0.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pandas as pd

from attnbench.model import setting_of, worst_status
from attnbench.stats import between_runs, paired

CASE_KEYS = ["batch", "dim", "dtype", "device", "causal", "heads", "seq_len", "pass"]


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
                         if any(name in _passes(v) for v in visits)]
        merged.append(out)
    # In the suite's order (the sweep numbers the cases; rounds visit them shuffled).
    position = {id(r): i for i, r in enumerate(merged)}
    return sorted(merged, key=lambda r: (r.get("case_index") is None, r.get("case_index") or 0, position[id(r)]))


def _passes(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["pass"]: p for p in record.get("passes", [])}


def _merge_pass(name: str, visits: list[dict[str, Any]]) -> dict[str, Any]:
    results = [(visit_round(v), _passes(v).get(name)) for v in visits]
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


def _aligned(a: dict[str, Any], b: dict[str, Any], key: str) -> tuple[list[list[float]], list[list[float]]]:
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


PAIRED_COLUMNS = ["label", *CASE_KEYS, "rounds", "speedup", "speedup_low", "speedup_high", "speedup_method",
                  "mem_ratio", "mem_ratio_low", "mem_ratio_high"]


def paired_table(records: list[dict[str, Any]], baseline: str, level: float = paired.LEVEL) -> pd.DataFrame:
    """Per variant, case and pass (merged records, see ``merge_visits``): the
    paired speed-up over ``baseline`` (baseline time / variant time, from the
    visits of the same round, turn by turn where they took turns) and memory ratio (peak / the baseline's), each
    with its ``level`` interval. The variance of the log ratios is pooled
    over the run's pairs (``paired.ratio_prior``)."""
    base: dict[tuple, dict[str, Any]] = {}
    rows = []
    for record in records:
        case = record["case"]
        for p in record.get("passes", []):
            key = tuple(case[k] for k in CASE_KEYS[:-1]) + (p["pass"],)
            if case["label"] == baseline and p["status"] == "ok":
                base[key] = p
            rows.append((case, key, p))
    pairs = [(key, case, base[key], p) for case, key, p in rows if key in base and p["status"] == "ok"]
    aligned = [paired_rounds(b, p)[1:] for _, _, b, p in pairs]  # (baseline, variant, in turns) per round
    prior = paired.ratio_prior(aligned)
    out = []
    for (key, case, b, p), (num, den, together) in zip(pairs, aligned, strict=True):
        speed = paired.paired_ratio(num, den, level=level, prior=prior, in_turns=together)
        mem_a, mem_b = _aligned(p, b, "peak_mem_mib")
        mem = paired.paired_ratio(mem_a, mem_b, level=level) if mem_a else None
        out.append({"label": case["label"], **dict(zip(CASE_KEYS, key, strict=True)), "rounds": speed.rounds,
                    "speedup": speed.estimate, "speedup_low": speed.low, "speedup_high": speed.high,
                    "speedup_method": speed.method,
                    "mem_ratio": mem.estimate if mem else math.nan, "mem_ratio_low": mem.low if mem else math.nan,
                    "mem_ratio_high": mem.high if mem else math.nan})
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


# --- two runs -------------------------------------------------------------------------

MARK_SLOWER, MARK_FASTER, MARK_SAME, MARK_FAILED, MARK_UNDECIDED = "+", "-", "~", "x", "?"
_MARKS = {between_runs.SLOWER: MARK_SLOWER, between_runs.FASTER: MARK_FASTER, between_runs.SAME: MARK_SAME,
          between_runs.TOO_FEW: MARK_UNDECIDED}
# What a case's change was judged against (``against``): the variants visited
# beside it (its setting group, same rounds), or every case of the run.
AGAINST_PEERS, AGAINST_ALL = "peers", "all cases"
COMPARE_COLUMNS = ["mark", "label", "seq_len", "heads", "pass", "batch", "dim", "dtype", "device", "causal",
                   "status_a", "status_b", "n_a", "n_b", "median_a_ms", "median_b_ms", "ratio", "relative",
                   "low", "high", "p_value", "verdict", "significant", "against", "setting_shift",
                   "setting_moved", "case_id"]


def _pass_index(records: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[dict, dict]]:
    out = {}
    for record in records:
        passes = _passes(record)
        for name in record["case"]["passes"]:
            out[(record["case_id"], name)] = (record, passes.get(name, {"status": record.get("status", "error")}))
    return out


def compare_records(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
                    level: float = between_runs.COMPARE_LEVEL, min_effect: float = between_runs.MIN_EFFECT
                    ) -> tuple[pd.DataFrame, between_runs.CommonShift | None]:
    """Run B against run A (merged records), one row per case and pass in
    either, with the visit as the unit (``between_runs.compare_visits``): the
    geometric-mean ratio of visit medians B/A; the ratio relative to the
    variants visited beside the case (its setting group, where it has at least
    three: ``against`` = ``peers``) or else to the shift common to all cases
    (``all cases``), with its interval; the verdict and a mark:
    ``+`` slower, ``-`` faster, ``~`` no change beyond the minimum effect,
    ``?`` too few rounds for a verdict, ``x`` failed or missing in a run.
    ``n_a``/``n_b`` count visits. ``setting_shift``: the change the case's
    setting group shares (its peers', NaN when not judged against them);
    ``setting_moved``: that shared change stands out from the other
    settings' (``between_runs.standing_out``)."""
    ia, ib = _pass_index(records_a), _pass_index(records_b)
    keys = list(dict.fromkeys([*ia, *ib]))
    by_round_a = {k: visit_medians_by_round(ia[k][1]) for k in ia if ia[k][1].get("status") == "ok"}
    by_round_b = {k: visit_medians_by_round(ib[k][1]) for k in ib if ib[k][1].get("status") == "ok"}
    medians_a = {k: list(v.values()) for k, v in by_round_a.items()}
    medians_b = {k: list(v.values()) for k, v in by_round_b.items()}
    groups = {k: (*setting_of(rec["case"]), k[1]) for k, (rec, _) in [*ia.items(), *ib.items()]}  # a unit, per pass
    result = between_runs.compare_visits({k: v for k, v in by_round_a.items() if v},
                                   {k: v for k, v in by_round_b.items() if v}, level, min_effect, groups=groups)
    rows = []
    for key in keys:
        (rec_a, pa), (rec_b, pb) = ia.get(key, (None, None)), ib.get(key, (None, None))
        case = (rec_a or rec_b)["case"]
        ma, mb = medians_a.get(key) or [], medians_b.get(key) or []
        row = {"label": case["label"], "seq_len": case["seq_len"], "heads": case["heads"], "pass": key[1],
               "batch": case["batch"], "dim": case["dim"], "dtype": case["dtype"], "device": case["device"],
               "causal": case["causal"], "status_a": pa["status"] if pa else "missing",
               "status_b": pb["status"] if pb else "missing", "n_a": len(ma), "n_b": len(mb),
               "median_a_ms": statistics.median(ma) if ma else math.nan,
               "median_b_ms": statistics.median(mb) if mb else math.nan, "case_id": key[0]}
        group = groups[key]
        shared = result.group_shifts.get(group)
        row.update(setting_shift=shared.ratio if shared else math.nan, setting_moved=group in result.moved_together)
        change = result.changes.get(key)
        if change is None:
            row.update(ratio=math.nan, relative=math.nan, low=math.nan, high=math.nan, p_value=math.nan,
                       verdict="failed", significant=False, mark=MARK_FAILED, against="")
        else:
            row.update(ratio=change.ratio, relative=change.relative, low=change.low, high=change.high,
                       p_value=change.p_value, verdict=change.verdict, significant=change.significant,
                       mark=_MARKS[change.verdict], against=AGAINST_PEERS if key in result.peer_judged else AGAINST_ALL)
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS), result.shift

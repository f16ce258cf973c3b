"""Two runs, before and after: each case of run B against run A with the
visit (one case in one round) as the unit (``attnbench.stats.between_runs``
has the test and why), the shift all cases share, the summary per variant,
the cases a gate could not compare, and the gate's verdict."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from attnbench.analysis.serving import kv_label
from attnbench.model import Status, case_field, setting_of
from attnbench.stats import between_runs
from attnbench.store.visits import passes_by_name, visit_medians_by_round

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
        passes = passes_by_name(record)
        for name in record["case"]["passes"]:
            out[(record["case_id"], name)] = (record, passes.get(name, {"status": record.get("status", "error")}))
    return out


def compare_run_visits(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
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
        label = kv_label(case["label"], case["heads"], case_field(case, "kv_heads"))  # sdpa kv2 apart from sdpa
        row = {"label": label, "seq_len": case["seq_len"], "heads": case["heads"], "pass": key[1],
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
                       verdict="failed", significant=False, mark=between_runs.MARK_FAILED, against="")
        else:
            row.update(ratio=change.ratio, relative=change.relative, low=change.low, high=change.high,
                       p_value=change.p_value, verdict=change.verdict, significant=change.significant,
                       mark=between_runs.MARKS[change.verdict],
                       against=AGAINST_PEERS if key in result.peer_judged else AGAINST_ALL)
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS), result.shift


def compare_summary(compared: pd.DataFrame) -> pd.DataFrame:
    """Per variant (label) and pass: the geometric mean of the ratios B/A over the
    cases measured in both runs, and how many cases got each mark."""
    rows = []
    for (label, pass_name), group in compared.groupby(["label", "pass"], sort=False):
        ok = group[group["mark"] != between_runs.MARK_FAILED]["ratio"]
        rows.append({"label": label, "pass": pass_name, "cases": len(group),
                     "geomean_ratio": float(np.exp(np.log(ok).mean())) if len(ok) else math.nan,
                     "slower": int((group["mark"] == between_runs.MARK_SLOWER).sum()),
                     "faster": int((group["mark"] == between_runs.MARK_FASTER).sum()),
                     "same": int((group["mark"] == between_runs.MARK_SAME).sum()),
                     "undecided": int((group["mark"] == between_runs.MARK_UNDECIDED).sum()),
                     "failed": int((group["mark"] == between_runs.MARK_FAILED).sum())})
    return pd.DataFrame(rows, columns=["label", "pass", "cases", "geomean_ratio", "slower", "faster", "same",
                                       "undecided", "failed"])


def regressions(compared: pd.DataFrame, fail_above: float) -> pd.DataFrame:
    """The significant slowdowns whose ratio B/A exceeds ``fail_above``."""
    return compared[(compared["mark"] == between_runs.MARK_SLOWER) & (compared["ratio"] > fail_above)]


def moved_settings(compared: pd.DataFrame) -> list[str]:
    """One line per setting group (and pass) whose variants moved together
    between the runs beyond the other settings (``setting_moved``)."""
    lines = []
    keys = ["seq_len", "heads", "pass", "batch", "dim", "dtype", "device", "causal"]
    for key, group in compared[compared["setting_moved"].fillna(False).astype(bool)].groupby(keys, sort=False):
        n, heads, pass_name = key[:3]
        lines.append(f"N={n} H={heads} {pass_name}: {len(group)} variants, B/A {group['setting_shift'].iloc[0]:.3f}")
    return lines


def lost_cases(compared: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``compare_run_visits`` measured in run A (ok) but missing or failed in
    run B: a gate cannot pass on them, as nothing was compared."""
    return compared[(compared["status_a"] == Status.OK) & (compared["status_b"] != Status.OK)]


@dataclass(frozen=True)
class TwoRuns:
    """Run B against run A, computed once: one row per case and pass
    (``compare_run_visits``), the shift all cases share, the summary per
    variant, and what a reader must be told beside the table."""

    compared: pd.DataFrame
    shift: between_runs.CommonShift | None
    min_effect: float

    @cached_property
    def summary(self) -> pd.DataFrame:
        return compare_summary(self.compared)

    @cached_property
    def lost(self) -> pd.DataFrame:
        """Cases measured in A that B lost (missing or failed)."""
        return lost_cases(self.compared)

    @cached_property
    def missing_in_a(self) -> int:
        """Cases marked x for another reason than a loss: not measured in A."""
        return int((self.compared["mark"] == between_runs.MARK_FAILED).sum()) - len(self.lost)

    @cached_property
    def moved(self) -> list[str]:
        return moved_settings(self.compared)

    @cached_property
    def undecided(self) -> int:
        return int((self.compared["mark"] == between_runs.MARK_UNDECIDED).sum())


def compare_two_runs(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]], pass_name: str | None = None,
                     min_effect: float = between_runs.MIN_EFFECT) -> TwoRuns:
    """Run B against run A (merged records), keeping one pass when ``pass_name`` is given."""
    compared, shift = compare_run_visits(records_a, records_b, min_effect=min_effect)
    if pass_name:
        compared = compared[compared["pass"] == pass_name]
    return TwoRuns(compared, shift, min_effect)


@dataclass(frozen=True)
class GateVerdict:
    """``compare --fail-above``: whether B fails against A, and why. ``shifted``:
    every case is slower together beyond the threshold; ``regressions``: the
    cases significantly slower than it; ``lost``: cases of A that B lost (a
    gate must not pass on what it could not compare)."""

    fail_above: float
    shifted: bool
    regressions: pd.DataFrame
    lost: pd.DataFrame

    @property
    def failed(self) -> bool:
        return self.shifted or len(self.regressions) > 0 or len(self.lost) > 0

    @property
    def count(self) -> int:
        """Regressions as ``compare --json`` counts them: the cases, plus one for a shared shift."""
        return len(self.regressions) + int(self.shifted)


def gate(runs: TwoRuns, fail_above: float) -> GateVerdict:
    """The verdict of ``--fail-above``: fail on a significant slowdown past the
    ratio (a case, or every case together) or on a case B lost."""
    shift = runs.shift
    shifted = shift is not None and shift.verdict == between_runs.SLOWER and shift.ratio > fail_above
    return GateVerdict(fail_above, shifted, regressions(runs.compared, fail_above), runs.lost)


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """A nested mapping as dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _variants(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The suite's variants by label: a bare name is its own label, without parameters."""
    out = {}
    for entry in raw.get("variants") or []:
        if isinstance(entry, str):
            out[entry] = {"name": entry}
        elif isinstance(entry, dict):
            out[str(entry.get("label") or entry.get("name"))] = {k: v for k, v in entry.items() if k != "label"}
    return out


def suite_differences(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> list[str]:
    """What differs between the suites two runs were made with, one line per
    key as ``linformer.params.k 128 → 384`` (a variant's keys under its label):
    a comparison of cases built or timed differently compares those changes
    too, and its reader must know."""
    raw_a, raw_b = meta_a.get("suite") or {}, meta_b.get("suite") or {}
    lines = []
    if meta_a.get("suite_name") != meta_b.get("suite_name"):
        lines.append(f"suite {meta_a.get('suite_name')} → {meta_b.get('suite_name')}")
    if (meta_a.get("allocator") or "steady") != (meta_b.get("allocator") or "steady"):
        lines.append(f"timing.allocator {meta_a.get('allocator') or 'steady'} → {meta_b.get('allocator') or 'steady'}")
    for section in ("defaults", "grid", "timing", "limits"):
        a, b = _flat(raw_a.get(section) or {}, section), _flat(raw_b.get(section) or {}, section)
        for key in dict.fromkeys([*a, *b]):
            if key.endswith(".allocator"):
                continue  # said above, with the older runs' implied value
            if a.get(key) != b.get(key):
                lines.append(f"{key} {a.get(key, '(unset)')} → {b.get(key, '(unset)')}")
    va, vb = _variants(raw_a), _variants(raw_b)
    for label in dict.fromkeys([*va, *vb]):
        if label not in vb:
            lines.append(f"{label}: only in A")
        elif label not in va:
            lines.append(f"{label}: only in B")
        else:
            a, b = _flat(va[label], label), _flat(vb[label], label)
            lines += [f"{key} {a.get(key, '(default)')} → {b.get(key, '(default)')}"
                      for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]
    return lines

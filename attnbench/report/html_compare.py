"""``attnbench compare RUN_A RUN_B --html FILE``: the comparison of two runs as
one self-contained page (``html_page``), from the same ``TwoRuns`` as the
terminal tables. The two runs' verdicts (and the gate's, with
``--fail-above``) as the banner; the runs side by side with their
calibrations and what differs between their suites; then the changed cases
first, each with the two runs' visits drawn (a point per visit's median, a
tick at each run's median); the table of every case (sortable); the
geometric mean per variant."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from attnbench.analysis.baseline import describe_setting
from attnbench.analysis.two_runs import GateVerdict, TwoRuns
from attnbench.model import PASS_SHORT, SETTING
from attnbench.report.build import RunReport
from attnbench.report.cells import fmt_ms
from attnbench.report.html import calibration_html, run_facts
from attnbench.report.html_page import (
    Banner,
    Cell,
    Charts,
    Table,
    base_spec,
    esc,
    facts_html,
    label_colors,
    notes_html,
    page,
    require_html,
)
from attnbench.report.two_runs import (
    COMPARE_COLUMNS,
    SUMMARY_COLUMNS,
    compare_caption,
    compare_cells,
    compare_title,
    lost_case_lines,
    shift_text,
    summary_cells,
    two_runs_warnings,
)
from attnbench.store.results import Run
from attnbench.store.visits import passes_by_name, visit_medians_by_round

CHANGED_MARKS = ("+", "-", "x", "?")  # the marks of a case that changed or could not be judged, in this order
MARK_CSS = {"+": "mark-slower", "-": "mark-faster", "x": "mark-failed", "?": "mark-undecided"}
RUN_COLORS = {"A": "#6b7a90", "B": "#e8710a"}
MOST_DRAWN = 60  # changed cases drawn with their visits (the table lists them all)
LARGEST_MOVES = 10  # with no case changed, the cases that moved most are drawn instead


def changed_first(compared: pd.DataFrame) -> pd.DataFrame:
    """The cases in the order the page lists them: slower, faster, failed,
    undecided, then unchanged; within each, the largest change first."""
    size = [abs(math.log(r)) if isinstance(r, float) and r > 0 and math.isfinite(r) else -1.0
            for r in compared["relative"]]
    rank = [CHANGED_MARKS.index(m) if m in CHANGED_MARKS else len(CHANGED_MARKS) for m in compared["mark"]]
    return compared.assign(_rank=rank, _size=size).sort_values(["_rank", "_size"], ascending=[True, False],
                                                               kind="stable").drop(columns=["_rank", "_size"])


def html_two_runs(a: Run, b: Run, runs: TwoRuns, differences: list[str], verdict: GateVerdict | None = None) -> str:
    """The whole comparison of run B against run A as one HTML document."""
    require_html()
    compared = changed_first(runs.compared)
    labels = list(dict.fromkeys(compared["label"]))
    colors = label_colors(labels)
    charts = Charts()
    report_a, report_b = RunReport(a, a.frame(), None), RunReport(b, b.frame(), None)
    banners = [Banner(report_a.verdict.level, f"A {a.run_id}: {report_a.verdict.headline}"),
               Banner(report_b.verdict.level, f"B {b.run_id}: {report_b.verdict.headline}")]
    if verdict is not None:
        banners.append(_gate_banner(verdict))
    changed = compared[compared["mark"].isin(CHANGED_MARKS)]
    several = compared[SETTING].drop_duplicates().shape[0] > 1
    sections = [("changed", f"changed cases ({len(changed)} of {len(compared)})",
                 _changed_section(a, b, compared, changed, charts, several, runs.min_effect)),
                ("cases", "every case", _cases_table(compared, a.run_id, b.run_id, runs.min_effect, "cases")),
                ("per-variant", "per variant", _summary_table(runs.summary))]
    header = _header(a, b, report_a, report_b, runs, differences)
    title = f"attnbench compare: {b.run_id} against {a.run_id}"
    return page(title, banners, header, labels, colors, sections, charts)


def _gate_banner(verdict: GateVerdict) -> Banner:
    if not verdict.failed:
        return Banner("trustworthy", f"--fail-above {verdict.fail_above}: passed (no significant slowdown past it, "
                                     "no case lost)")
    why = []
    if len(verdict.regressions):
        why.append(f"{len(verdict.regressions)} case(s) significantly slower than {verdict.fail_above}x")
    if verdict.shifted:
        why.append("every case slower together")
    if len(verdict.lost):
        why.append(f"{len(verdict.lost)} case(s) of A missing or failed in B")
    return Banner("unreliable", f"--fail-above {verdict.fail_above}: failed ({'; '.join(why)})")


def _header(a: Run, b: Run, report_a: RunReport, report_b: RunReport, runs: TwoRuns,
            differences: list[str]) -> str:
    keep = ("run", "directory", "suite", "started", "status", "machine", "torch", "allocator", "git commit")
    sides = "".join(f'<div><h3>{esc(side)}</h3>{facts_html([f for f in run_facts(report) if f[0] in keep])}</div>'
                    for side, report in (("A", report_a), ("B", report_b)))
    notes = [*(f"warning: {w}" for w in a.warnings + b.warnings)]
    if differences and a.path.resolve() != b.path.resolve():
        notes.append("the two runs were made with different suites; what differs (A → B):\n  "
                     + "\n  ".join(differences))
    notes += [f"warning: {w}" for w in two_runs_warnings(runs)]
    if len(runs.lost):
        notes.append(f"{len(runs.lost)} case(s) measured in RUN_A are missing or failed in RUN_B:\n  "
                     + "\n  ".join(lost_case_lines(runs.lost)))
    calibration = calibration_html([("A " + a.run_id, a.meta), ("B " + b.run_id, b.meta)])
    return (f'<div class="grid2">{sides}</div>{notes_html(notes)}{calibration}'
            f'<p class="caption">{esc(shift_text(runs.shift, runs.min_effect))}</p>')


def _case_name(r: dict[str, Any], several_settings: bool) -> str:
    name = f"{r['label']} N={r['seq_len']} h={r['heads']} {PASS_SHORT.get(r['pass'], r['pass'])}"
    return name + (f" ({describe_setting(r)})" if several_settings else "")


def visit_values(a: Run, b: Run, rows: pd.DataFrame, several_settings: bool) -> list[dict[str, Any]]:
    """One point per visit of each case in ``rows``, in each run: its median (ms)."""
    index = {}
    for side, run in (("A", a), ("B", b)):
        for record in run.records:
            for name, p in passes_by_name(record).items():
                index[(side, record["case_id"], name)] = p
    values = []
    for r in rows.to_dict("records"):
        case = _case_name(r, several_settings)
        for side in ("A", "B"):
            p = index.get((side, r["case_id"], r["pass"]))
            if p is None or p.get("status") != "ok":
                continue
            for round_id, median in visit_medians_by_round(p).items():
                values.append({"label": r["label"], "case": case, "run": side, "round": round_id, "ms": median,
                               "ms_text": fmt_ms(median), "kind": "visit"})
    return values


def _changed_section(a: Run, b: Run, compared: pd.DataFrame, changed: pd.DataFrame, charts: Charts,
                     several: bool, min_effect: float) -> str:
    if changed.empty:
        moved = compared[compared["mark"] == "~"].head(LARGEST_MOVES)
        intro = (f"<p>No case changed beyond ±{min_effect:.0%} against its peers. The {len(moved)} cases that "
                 "moved most, with their visits:</p>")
        drawn, title = moved, "the cases that moved most: each run's visits (median ms of each visit)"
    else:
        intro = ""
        drawn = changed.head(MOST_DRAWN)
        title = "changed cases: each run's visits (median ms of each visit)"
        if len(changed) > MOST_DRAWN:
            intro = f'<p class="caption">the first {MOST_DRAWN} of {len(changed)} changed cases are drawn</p>'
    out = intro
    if not drawn.empty:
        out += visits_chart(a, b, drawn, charts, title, several)
    if not changed.empty:
        out += _cases_table(changed, a.run_id, b.run_id, None, "changed")
    return out


def visits_chart(a: Run, b: Run, rows: pd.DataFrame, charts: Charts, title: str, several: bool) -> str:
    """A row per case, in it A's visits and B's (a point each, median ms, log
    scale) and a tick at each run's median."""
    values = visit_values(a, b, rows, several)
    if not values:
        return ""
    order = [_case_name(r, several) for r in rows.to_dict("records")]
    medians = [{"label": r["label"], "case": _case_name(r, several), "run": side, "ms": r[key],
                "ms_text": fmt_ms(r[key]), "kind": "median"}
               for r in rows.to_dict("records") for side, key in (("A", "median_a_ms"), ("B", "median_b_ms"))
               if not pd.isna(r[key])]
    spec = base_spec(values + medians, height={"step": 13})
    color = {"field": "run", "type": "nominal", "title": "run",
             "scale": {"domain": list(RUN_COLORS), "range": list(RUN_COLORS.values())},
             "legend": {"orient": "top", "direction": "horizontal"}}
    y = {"field": "case", "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 240}}
    y_offset = {"field": "run", "type": "nominal", "sort": ["A", "B"]}
    x = {"field": "ms", "type": "quantitative", "scale": {"type": "log", "nice": False, "padding": 12},
         "title": "median ms of a visit (log)", "axis": {"format": "~g", "grid": True}}
    tooltip = [{"field": "case", "title": "case"}, {"field": "run", "title": "run"},
               {"field": "round", "title": "round"}, {"field": "ms_text", "title": "median ms"}]
    spec["layer"] = [
        {"mark": {"type": "tick", "thickness": 2, "size": 10}, "transform": [{"filter": "datum.kind == 'median'"}],
         "encoding": {"x": x, "y": y, "yOffset": y_offset, "color": color,
                      "tooltip": [{"field": "case"}, {"field": "run"}, {"field": "ms_text", "title": "median ms"}]}},
        {"name": "points", "mark": {"type": "point", "filled": True, "size": 28, "opacity": 0.8},
         "transform": [{"filter": "datum.kind == 'visit'"}],
         "encoding": {"x": x, "y": y, "yOffset": y_offset, "color": color, "tooltip": tooltip}}]
    return charts.add(spec, "visits", title, points=len(values),
                      caption="a point per visit (one round of the case: the median of its samples); the tick: "
                              "the run's median over visits")


def _cases_table(rows: pd.DataFrame, name_a: str, name_b: str, min_effect: float | None, name: str) -> str:
    caption = compare_caption(min_effect) if min_effect is not None else None
    table = Table(name, compare_title(name_a, name_b), COMPARE_COLUMNS, numeric=(2, 3, 6, 7, 8, 9), caption=caption)
    for r in rows.to_dict("records"):
        cells = compare_cells(r)
        values = [None, None, r["seq_len"], r["heads"], None, None, r["median_a_ms"], r["median_b_ms"], r["ratio"],
                  r["relative"]]
        table.add([r["label"]], [Cell(text, _value(value), css=MARK_CSS.get(text, "") if i == 0 else "")
                                 for i, (text, value) in enumerate(zip(cells, values, strict=True))])
    return table.html()


def _value(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def _summary_table(summary: pd.DataFrame) -> str:
    table = Table("summary", "per variant: geometric mean of B/A over the cases measured in both runs",
                  SUMMARY_COLUMNS, numeric=range(2, 9))
    for r in summary.to_dict("records"):
        table.add([r["label"]], summary_cells(r))
    return table.html()

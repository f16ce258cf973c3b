"""The report of a run as one self-contained HTML page (``attnbench report RUN
--html FILE``), rendered from the same ``RunReport`` as the terminal and
markdown reports: the verdict as a banner, the header (suite, machine, torch,
allocator, calibrations, warnings), per pass the time and memory charts
against N (log-log, the samples' interquartile range as a band, hover for the
figures) and the speed-ups against the baseline with their paired intervals
as whiskers, then the tables (sortable) of the terminal report; the trade-off
chart beside LRA's own, the published table with the rank agreement, the
quality tables, the roofline, the failed cases with their tracebacks. The
page itself (escaping, the switches, sorting, drawing) is ``html_page``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.analysis.baseline import add_quartiles, describe_setting, label_order, settings_groups, table_groups
from attnbench.model import Status
from attnbench.report import serving
from attnbench.report.build import RunReport
from attnbench.report.cells import (
    FAILURE_COLUMNS,
    NOISY_MARK,
    SCALING_COLUMNS,
    SCALING_LEGEND,
    SIDE_BY_SIDE_KINDS,
    agreement_lines,
    allocator_text,
    cell_time,
    failure_rows,
    fastest_lines,
    fmt_mib,
    fmt_ms,
    lookup_rows,
    plain_notes,
    published_cells,
    ratio_text,
    relative_cell,
    relative_legend,
    scaling_rows,
    side_by_side_rows,
)
from attnbench.report.html_page import (
    Banner,
    Cell,
    Charts,
    Table,
    base_spec,
    color_scale,
    esc,
    facts_html,
    fill_unless_noisy,
    label_colors,
    labels_attr,
    n_axis,
    notes_html,
    page,
    require_html,
)
from attnbench.report.plots import (
    LRA_N,
    MQAR_QUALITY_LABEL,
    PASS_TITLES,
    TRADEOFF_PASS,
    lra_scores,
    published_tradeoff_points,
    tradeoff_points,
    unscored_points,
)
from attnbench.report.quality import (
    APPROX_NOTE,
    approx_header,
    approx_rows,
    mqar_caption,
    mqar_header,
    mqar_rows,
)
from attnbench.report.roofline import CALIBRATION_COLUMNS, calibration_rows, roofline_groups
from attnbench.store.results import write_atomic

TRACEBACKS_SHOWN, TRACEBACK_CHARS = 20, 6000  # the failed cases' tracebacks the page holds, each cut to this


def html_report(report: RunReport) -> str:
    """The whole report of a run as one HTML document (see the module's docstring)."""
    require_html()
    labels = label_order(report.frame) if not report.frame.empty else []
    colors = label_colors(labels)
    charts = Charts()
    sections: list[tuple[str, str, str]] = []
    if not report.frame.empty:
        for pass_name in report.passes:
            sections.append((f"pass-{pass_name}", PASS_TITLES.get(pass_name, pass_name),
                             _pass_section(report, pass_name, charts, labels, colors)))
    decode = _decode_section(report)
    if decode:
        sections.append(("decode", "decode: per token, the cache, the bandwidth bound", decode))
    tradeoff = _tradeoff_section(report, charts, labels, colors)
    if tradeoff:
        sections.append(("tradeoff", "speed, quality and memory (after LRA Figure 3)", tradeoff))
    published = _published_section(report)
    if published:
        sections.append(("published", f"published: {report.published.name}", published))
    quality = _quality_section(report)
    if quality:
        sections.append(("quality", "quality", quality))
    roofline = _roofline_section(report)
    if roofline:
        sections.append(("roofline", "roofline", roofline))
    failed = _failed_section(report)
    if failed:
        sections.append(("failed", "cases that did not succeed", failed))
    summary = fastest_lines(report)
    if summary:
        sections.append(("summary", "summary", notes_html(summary, "lines")))
    title = f"attnbench report: {report.meta.get('suite_name') or report.run.run_id}"
    verdict = report.verdict
    return page(title, [Banner(verdict.level, verdict.headline)], _header(report), labels, colors, sections, charts,
                variant_details(report))


def variant_details(report: RunReport) -> dict[str, str]:
    """Each label's variant and parameters, as the switches' hover text shows them."""
    if report.frame.empty:
        return {}
    first = report.frame.drop_duplicates("label").set_index("label")
    return {label: f"{label}: {row['variant']} {row['params'] if row['params'] not in (None, '', '{}') else ''}"
            .strip() for label, row in first.iterrows()}


def write_html(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


# --- the header -----------------------------------------------------------------------------

def run_facts(report: RunReport) -> list[tuple[str, Any]]:
    """The facts of a run's header, as the markdown report lists them."""
    run, meta = report.run, report.meta
    env = meta.get("environment") or {}
    gpus = env.get("gpus") or []
    gpu = ", ".join(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus) if gpus else None
    cores = env.get("cpu_cores_logical")
    groups = settings_groups(report.frame)
    return [("run", run.run_id), ("directory", str(run.path)), ("suite", meta.get("suite_name")),
            ("suite file", meta.get("suite_path")), ("started", _when(meta.get("started_at"))),
            ("finished", _when(meta.get("finished_at"))), ("status", meta.get("status")),
            ("machine", ", ".join(str(x) for x in (gpu, env.get("cpu_model"), f"{cores} cores" if cores else None)
                                  if x) or None),
            ("torch", env.get("torch")), ("python", env.get("python")), ("threads", env.get("torch_threads")),
            ("OS", env.get("os")), ("attnbench", env.get("attnbench")), ("git commit", env.get("git_commit")),
            ("allocator", allocator_text(report.allocator)), ("baseline", report.baseline),
            ("setting", describe_setting(groups[0][0]) if len(groups) == 1 else None),
            ("command", " ".join(meta.get("command") or []) or None)]


def _when(stamp: Any) -> str | None:
    """An ISO time stamp to the minute, as the terminal header writes it."""
    return str(stamp)[:16].replace("T", " ") if stamp else None


def calibration_html(metas: list[tuple[str, dict[str, Any]]]) -> str:
    rows = calibration_rows(metas)
    if not rows:
        return ""
    table = Table("calibration", "calibration: the machine at the start and the end of the run", CALIBRATION_COLUMNS)
    for row in rows:
        table.add([], row)
    return table.html()


def summary_line(report: RunReport) -> str:
    """The run in one line: suite, when, machine, torch, allocator, baseline."""
    facts = dict(run_facts(report))
    parts = [f"suite {facts['suite']}" if facts.get("suite") else None, facts.get("started"), facts.get("machine"),
             f"torch {facts['torch']}" if facts.get("torch") else None,
             f"allocator {report.allocator}" if report.allocator else None,
             f"baseline {report.baseline}" if report.baseline else None, facts.get("setting")]
    return f'<p class="summary-line">{esc(" · ".join(str(x) for x in parts if x))}</p>'


def _header(report: RunReport) -> str:
    """The summary line, the warnings, the calibration, then every fact (folded)."""
    notes = plain_notes(report)
    nothing = report.nothing_measured
    legend = (f"Cells: median ms of a pass; steps/s = 1000 / median ms; {NOISY_MARK} marks a noisy figure "
              f"(IQR/median over 10%), drawn hollow in the charts. {relative_legend(report)}."
              if not report.frame.empty else "No finished cases.")
    return (summary_line(report) + notes_html(notes) + (notes_html([nothing]) if nothing else "")
            + calibration_html([(report.run.run_id, report.meta)])
            + f'<details class="more"><summary>everything about the run: directory, command, versions</summary>'
            f'{facts_html(run_facts(report))}</details><p class="caption">{esc(legend)}</p>')


# --- one pass -------------------------------------------------------------------------------

def _series(label: str, heads: int, several_heads: bool) -> str:
    return f"{label} h={heads}" if several_heads else label


def _pass_section(report: RunReport, pass_name: str, charts: Charts, labels: list[str],
                  colors: dict[str, str]) -> str:
    data = report.frame[report.frame["pass"] == pass_name]
    groups = settings_groups(data)
    parts = []
    for setting, group in groups:
        where = f" — {describe_setting(setting)}" if len(groups) > 1 else ""
        ok = group[group["status"] == Status.OK]
        if ok.empty:
            continue
        parts.append('<div class="grid2">' + time_chart(report, ok, pass_name, charts, labels, colors, where)
                     + memory_chart(ok, pass_name, charts, labels, colors, where) + "</div>")
        if report.baseline is not None and report.several_variants:
            parts.append(speedup_chart(report, setting, pass_name, charts, where))
    parts += [median_table(group, pass_name, setting, heads, len(groups) > 1) for setting, heads, group
              in table_groups(data)]
    if report.baseline is not None and report.several_variants:
        relative = report.relative_of(pass_name)
        for kind in ("speed", "memory"):
            parts += [relative_table(group, pass_name, kind, report.baseline, setting, heads, len(groups) > 1)
                      for setting, heads, group in table_groups(relative)]
        parts.append(f'<p class="caption">{esc(relative_legend(report))}</p>')
    parts.append(scaling_table(report, pass_name))
    return "".join(parts)


def time_chart(report: RunReport, ok: pd.DataFrame, pass_name: str, charts: Charts, labels: list[str],
               colors: dict[str, str], where: str) -> str:
    """Median time against N, the samples' interquartile range as a band; a
    point per case, hollow where noisy, its figures on hover."""
    rows = add_quartiles(ok, report.records)
    several_heads = rows["heads"].nunique() > 1
    values = [{"label": r["label"], "series": _series(r["label"], r["heads"], several_heads), "heads": r["heads"],
               "n": r["seq_len"], "median": r["median_ms"], "q1": r["q1_ms"], "q3": r["q3_ms"],
               "iqr": f"{fmt_ms(r['q1_ms'])} – {fmt_ms(r['q3_ms'])}", "samples": r["samples"],
               "rounds": r.get("rounds"), "spread": _percent(r.get("round_spread")), "noisy": bool(r["noisy"]),
               "noisy_text": "yes (IQR/median > 10%)" if r["noisy"] else "no"}
              for r in rows.to_dict("records")]
    scale = color_scale(labels, colors)
    tooltip = [{"field": "series", "title": "variant"}, {"field": "n", "title": "N"},
               {"field": "median", "title": "median ms", "format": ".4~g"},
               {"field": "iqr", "title": "IQR of samples (ms)"}, {"field": "samples", "title": "samples"},
               {"field": "rounds", "title": "rounds"}, {"field": "spread", "title": "round spread"},
               {"field": "noisy_text", "title": "noisy"}]
    spec = base_spec(values, height=320)
    y = {"type": "quantitative", "scale": {"type": "log"}, "title": "median ms (band: IQR of the samples)",
         "axis": {"format": "~g"}}
    color = {"field": "label", "type": "nominal", "scale": scale, "legend": None}
    spec["encoding"] = {"x": n_axis(rows["seq_len"]), "detail": {"field": "series"}}
    dash = {"strokeDash": {"field": "heads", "type": "ordinal", "title": "heads"}} if several_heads else {}
    spec["layer"] = [
        {"mark": {"type": "area", "opacity": 0.16}, "transform": [{"filter": "datum.q1 > 0 && datum.q3 > 0"}],
         "encoding": {"y": {**y, "field": "q1"}, "y2": {"field": "q3"}, "color": color}},
        {"mark": {"type": "line", "strokeWidth": 1.6},
         "encoding": {"y": {**y, "field": "median"}, "color": color, **dash}},
        {"name": "points", "mark": {"type": "point", "filled": True, "size": 36, "strokeWidth": 1.4},
         "encoding": {"y": {**y, "field": "median"}, "stroke": color, "fill": fill_unless_noisy(scale),
                      "tooltip": tooltip}}]
    return charts.add(spec, "time", f"{pass_name}: time{where}", pass_name=pass_name, points=len(values))


def memory_chart(ok: pd.DataFrame, pass_name: str, charts: Charts, labels: list[str], colors: dict[str, str],
                 where: str) -> str:
    """Peak memory against N, a point per case with its figure on hover."""
    rows = ok[ok["peak_mem_mib"].notna() & (pd.to_numeric(ok["peak_mem_mib"], errors="coerce") > 0)]
    several_heads = ok["heads"].nunique() > 1
    values = [{"label": r["label"], "series": _series(r["label"], r["heads"], several_heads), "heads": r["heads"],
               "n": r["seq_len"], "mem": r["peak_mem_mib"], "mem_text": fmt_mib(r["peak_mem_mib"]), "noisy": False}
              for r in rows.to_dict("records")]
    scale = color_scale(labels, colors)
    spec = base_spec(values, height=320)
    y = {"field": "mem", "type": "quantitative", "scale": {"type": "log"}, "title": "peak MiB",
         "axis": {"format": "~g"}}
    color = {"field": "label", "type": "nominal", "scale": scale, "legend": None}
    spec["encoding"] = {"x": n_axis(ok["seq_len"]), "y": y, "detail": {"field": "series"}}
    dash = {"strokeDash": {"field": "heads", "type": "ordinal", "title": "heads"}} if several_heads else {}
    spec["layer"] = [
        {"mark": {"type": "line", "strokeWidth": 1.6}, "encoding": {"color": color, **dash}},
        {"name": "points", "mark": {"type": "point", "filled": True, "size": 36},
         "encoding": {"stroke": color, "fill": fill_unless_noisy(scale),
                      "tooltip": [{"field": "series", "title": "variant"}, {"field": "n", "title": "N"},
                                  {"field": "mem_text", "title": "peak MiB"}]}}]
    return charts.add(spec, "memory", f"{pass_name}: peak memory{where}", pass_name=pass_name, points=len(values))


def speedup_rows(report: RunReport, setting: dict, pass_name: str) -> pd.DataFrame:
    """The rows of the speed-up chart: every variant but the baseline, measured,
    with a speed-up, in the setting."""
    rows = report.relative_of(pass_name)
    for key, value in setting.items():
        rows = rows[rows[key] == value]
    return rows[(rows["status"] == Status.OK) & (rows["label"] != report.baseline) & rows["speedup"].notna()]


def speedup_chart(report: RunReport, setting: dict, pass_name: str, charts: Charts, where: str) -> str:
    """Each variant's speed-up against the baseline (log), a row per variant and
    in it a point per N, with the paired 95% interval over rounds as a whisker;
    hollow where the figure is noisy; 1 marked."""
    rows = speedup_rows(report, setting, pass_name)
    if rows.empty:
        return ""
    several_heads = rows["heads"].nunique() > 1
    values = []
    for r in rows.to_dict("records"):
        paired = r.get("speedup_method") == "t-rounds"
        low, high = (r["speedup_low"], r["speedup_high"]) if paired else (None, None)
        values.append({"label": r["label"], "series": _series(r["label"], r["heads"], several_heads),
                       "n": r["seq_len"], "speedup": r["speedup"], "low": low, "high": high,
                       "noisy": bool(r["noisy"]), "speedup_text": ratio_text(r["speedup"]),
                       "interval": (f"{ratio_text(low)} – {ratio_text(high)}" if paired and not pd.isna(low)
                                    else "none (one round: not paired)"),
                       "baseline_ms": fmt_ms(r["baseline_ms"]), "median": fmt_ms(r["median_ms"])})
    order = list(dict.fromkeys(v["series"] for v in values))
    ns = sorted(set(rows["seq_len"]))
    figures = [v for value in values for v in (value["speedup"], value["low"], value["high"], 1.0)
               if v is not None and not pd.isna(v) and v > 0]
    x = {"type": "quantitative", "scale": {"type": "log", "domain": [min(figures) / 1.2, max(figures) * 1.2],
                                           "nice": False},
         "axis": {"format": "~g", "grid": True},
         "title": f"speed-up vs {report.baseline} (log)"}
    color = {"field": "n", "type": "ordinal", "title": "N", "sort": "ascending",
             "scale": {"scheme": {"name": "blues", "extent": [0.4, 1.0]}},
             "legend": {"orient": "top", "direction": "horizontal", "labelExpr": _n_label_expr()}}
    y = {"field": "series", "type": "nominal", "sort": order, "title": None,
         "axis": {"labelLimit": 160, "grid": False}}
    y_offset = {"field": "n", "type": "ordinal", "sort": "ascending"}
    spec = base_spec(values, height={"step": max(5, 28 // len(ns))})
    spec["layer"] = [
        {"mark": {"type": "rule", "color": "#444", "strokeDash": [3, 3]}, "data": {"values": [{"one": 1}]},
         "transform": [], "encoding": {"x": {"datum": 1, **x}}},
        {"mark": {"type": "rule", "strokeWidth": 1.5}, "transform": [{"filter": "datum.low != null"}],
         "encoding": {"x": {**x, "field": "low"}, "x2": {"field": "high"}, "y": y, "yOffset": y_offset,
                      "color": color}},
        {"name": "points", "mark": {"type": "point", "filled": True, "size": 30, "strokeWidth": 1.4},
         "encoding": {"x": {**x, "field": "speedup"}, "y": y, "yOffset": y_offset,
                      "stroke": {**color, "legend": None},
                      "fill": {"condition": {"test": "datum.noisy", "value": "#ffffff"}, **color, "legend": None},
                      "tooltip": [{"field": "series", "title": "variant"}, {"field": "n", "title": "N"},
                                  {"field": "speedup_text", "title": "speed-up"},
                                  {"field": "interval", "title": "95% interval"},
                                  {"field": "median", "title": "median ms"},
                                  {"field": "baseline_ms", "title": f"{report.baseline} ms"}]}}]
    spec["config"] = {**spec["config"], "scale": {"offsetBandPaddingInner": 0.1}}
    return charts.add(spec, "speedup", f"{pass_name}: speed-up vs {report.baseline}{where}", pass_name=pass_name,
                      points=len(values),
                      caption=f"{report.baseline} = 1 (dashed); whiskers: the paired 95% interval over the run's "
                              "rounds; hollow: noisy (IQR/median > 10%)")


def _n_label_expr() -> str:
    return "datum.value >= 1024 && datum.value % 1024 == 0 ? 'N=' + (datum.value / 1024) + 'K' : 'N=' + datum.label"


def _percent(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.0%}"


def median_table(group: pd.DataFrame, pass_name: str, setting: dict, heads: int, several_settings: bool) -> str:
    """Median ms per variant (rows) and N (columns); a cell's value is the CSV's median_ms."""
    lookup = lookup_rows(group)
    ns = sorted(set(group["seq_len"]))
    where = f" — {describe_setting(setting)}" if several_settings else ""
    table = Table(f"median-{pass_name}", f"{pass_name}: median ms, {heads} heads{where}",
                  ["variant", *[f"N={n}" for n in ns]], numeric=range(1, len(ns) + 1),
                  caption=f"{NOISY_MARK}: noisy (IQR/median > 10%); hover a cell for its spread")
    for label in label_order(group):
        cells: list[Cell | str] = [label]
        for n in ns:
            r = lookup.get((label, heads, n, pass_name))
            if r is None:
                cells.append(Cell("-"))
            elif r["status"] != Status.OK:
                cells.append(Cell(cell_time(r), title=str(r.get("error") or "")))
            else:
                cells.append(Cell(cell_time(r), float(r["median_ms"]),
                                  f"IQR {fmt_ms(r['iqr_ms'])} ms over {r['samples']} samples, "
                                  f"{r.get('rounds')} rounds"))
        table.add([label], cells)
    return table.html()


def relative_table(group: pd.DataFrame, pass_name: str, kind: str, baseline: str, setting: dict, heads: int,
                   several_settings: bool) -> str:
    """LRA Table 2's layout: steps/s (speed-up [interval]) or peak MiB (ratio);
    a cell sorts by the speed-up or the peak memory."""
    lookup = lookup_rows(group)
    ns = sorted(set(group["seq_len"]))
    where = f" — {describe_setting(setting)}" if several_settings else ""
    what = "steps/s (speed-up [95% interval])" if kind == "speed" else "peak MiB (ratio)"
    table = Table(f"{kind}-{pass_name}", f"{pass_name}: {what} vs {baseline}, {heads} heads{where}",
                  ["variant", *[f"N={n}" for n in ns]], numeric=range(1, len(ns) + 1))
    key = "speedup" if kind == "speed" else "peak_mem_mib"
    for label in label_order(group):
        cells: list[Cell | str] = [label]
        for n in ns:
            r = lookup.get((label, heads, n, pass_name))
            value = None
            if r is not None and r["status"] == Status.OK and not pd.isna(r.get(key)):
                value = float(r[key])
            cells.append(Cell(relative_cell(r, kind), value))
        table.add([label], cells)
    return table.html()


def scaling_table(report: RunReport, pass_name: str) -> str:
    summary = report.scaling[pass_name]
    if summary.empty:
        return ""
    table = Table(f"scaling-{pass_name}", f"{pass_name}: scaling in N, crossover vs {report.baseline or '-'}",
                  SCALING_COLUMNS, numeric=range(1, 8), caption=SCALING_LEGEND)
    for r, cells in zip(summary.to_dict("records"), scaling_rows(summary), strict=True):
        table.add([r["label"]], cells)
    return table.html()


# --- serving ---------------------------------------------------------------------------------

def _decode_section(report: RunReport) -> str:
    """The decode table (µs per token, cache or state, % of the bandwidth bound;
    a cell sorts by its µs) and the decode scaling, as the terminal shows them."""
    rows = report.decode
    if rows.empty:
        return ""
    ns, body = serving.decode_cells(rows)
    us = {(str(r.label), int(r.batch), int(r.seq_len)): float(r.us_per_token) for r in rows.itertuples()}
    table = Table("decode", "decode: µs per token · cache or state · % of the bandwidth bound",
                  ["variant", "B", *[f"N={n}" for n in ns]], numeric=range(1, len(ns) + 2),
                  caption=serving.DECODE_LEGEND)
    for label, batch, cells in body:
        table.add([label], [label, str(batch), *[Cell(" · ".join(c), us.get((label, batch, n)))
                                                  for n, c in zip(ns, cells, strict=True)]])
    parts = [table.html()]
    scaling = serving.scaling_rows(report)
    if scaling:
        fits = Table("decode-scaling", "decode scaling in N and crossover vs the KV cache",
                     serving.SCALING_COLUMNS, numeric=range(1, len(serving.SCALING_COLUMNS)),
                     caption=serving.SCALING_LEGEND)
        for row in scaling:
            fits.add([row[0]], row)
        parts.append(fits.html())
    return "".join(parts)


# --- the trade-off chart --------------------------------------------------------------------

def _tradeoff_section(report: RunReport, charts: Charts, labels: list[str], colors: dict[str, str]) -> str:
    """The run's speed, quality and memory at its largest common N (LRA Figure 3),
    whiskers the paired interval of the speed; beside it LRA's own numbers."""
    if report.frame.empty or TRADEOFF_PASS not in report.passes:
        return ""
    frame = report.relative if report.baseline is not None else report.frame
    quality = report.measured_scores or None
    scores, table1 = lra_scores()
    points, n, notes = tradeoff_points(frame, scores, quality)
    if n is None or points.empty:
        return ""
    apart = unscored_points(frame, n, points)
    domain = speed_domain(pd.concat([points, apart], ignore_index=True))
    batch = ", ".join(map(str, sorted(set(frame[frame["pass"] == TRADEOFF_PASS]["batch"]))))
    y_title = MQAR_QUALITY_LABEL if quality is not None else str(table1.meta.get("score_label", "LRA score"))
    measured = bubble_chart(points, y_title, domain, "MiB", labels, colors)
    published = published_tradeoff_points()
    by_variant = {}
    for label in labels:
        variant = str(frame[frame["label"] == label]["variant"].iloc[0])
        by_variant.setdefault(variant, label)
    published = published.assign(run_label=[by_variant.get(v, "") for v in published["variant"]])
    lra = bubble_chart(published, str(table1.meta.get("score_label", "LRA score")), speed_domain(published), "GB",
                       labels, colors)
    out = ('<div class="grid2">'
           + charts.add(measured, "tradeoff", f"measured: one layer, training step, N={n}, batch {batch}",
                        points=len(points), caption="circle area: peak memory; whiskers: paired 95% interval of the "
                                                    "speed; hollow: noisy")
           + charts.add(lra, "tradeoff-published", f"LRA's own numbers: 4-layer model, N={LRA_N}, batch 32 (TPU v3)",
                        points=len(published)) + "</div>")
    if not apart.empty:
        out += charts.add(bubble_chart(apart, None, domain, "MiB", labels, colors), "tradeoff-unscored",
                          "measured, with no score: placed by speed and memory only", points=len(apart))
    lines = [*notes, f"scores: {table1.citation}"]
    return out + notes_html(lines, "lines")


def speed_domain(points: pd.DataFrame) -> list[float]:
    """The x range of a trade-off chart: every speed and interval, with room for the labels on the right."""
    low = float(points[["examples_per_s", "speed_low"]].min().min())
    high = float(points[["examples_per_s", "speed_high"]].max().max())
    return [low / 1.6, high * 2.2]


# The largest circle's area (px²) on a chart BUBBLE_WIDTH wide; the page's script shrinks it on narrower ones,
# and on one NARROW_WIDTH wide or less (a phone) takes the labels' layout made for that width (dy_narrow).
BUBBLE_AREA, BUBBLE_WIDTH, NARROW_WIDTH = 1600, 520, 320
LABEL_STEP_PX = 12  # a label's height: labels closer than this on the same line are moved apart


def label_offsets(xs: list[float], ys: list[float], texts: list[str], domain: list[float],
                  width: float = BUBBLE_WIDTH, height: float = 300.0) -> list[int]:
    """Each point's label moved down (then up) by a line at a time while it would
    overlap one placed already (the trade-off PNG's greedy layout), reckoned on
    a chart of about ``width`` × ``height`` pixels (the charts are as tall
    everywhere, narrower on a phone); returns the offsets in pixels."""
    lo, hi = math.log10(domain[0]), math.log10(domain[1])
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    y_span = (y_hi - y_lo) or 1.0
    placed: list[tuple[float, float, float]] = []
    offsets = [0] * len(xs)
    for i in sorted(range(len(xs)), key=lambda k: -ys[k]):
        px = (math.log10(xs[i]) - lo) / (hi - lo or 1.0) * width + 7
        py = (y_hi - ys[i]) / y_span * height * 0.85
        text_width = 6.5 * len(texts[i])
        for step in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6):
            y = py + LABEL_STEP_PX * step
            if all(abs(y - oy) >= LABEL_STEP_PX - 1 or px + text_width < ox or ox + ow < px for ox, oy, ow in placed):
                break
        placed.append((px, y, text_width))
        offsets[i] = int(round(y - py))
    return offsets


def bubble_chart(points: pd.DataFrame, y_title: str | None, domain: list[float], unit: str,
                 labels: list[str], colors: dict[str, str]) -> dict[str, Any]:
    """A circle per point: x examples/s (log), y the score (none: a strip),
    area the memory, its speed's interval as a whisker, its label beside it."""
    own = "run_label" not in points.columns
    values = []
    records = points.to_dict("records")
    strip = y_title is None
    where = ([r["examples_per_s"] for r in records], [0.0 if strip else float(r["score"]) for r in records],
             [str(r["label"]) for r in records], domain)
    wide, narrow = label_offsets(*where, width=BUBBLE_WIDTH), label_offsets(*where, width=NARROW_WIDTH)
    for r, dy, dy_narrow in zip(records, wide, narrow, strict=True):
        label = r["label"] if own else r["run_label"]
        values.append({"label": label, "name": r["label"], "x": r["examples_per_s"], "low": r["speed_low"],
                       "high": r["speed_high"], "memory": r["memory"], "score": 0 if strip else r["score"],
                       "noisy": bool(r["noisy"]), "color_key": label if label in colors else "", "dy": dy,
                       "dy_narrow": dy_narrow,
                       "speed_text": f"{r['examples_per_s']:.3g}", "memory_text": f"{r['memory']:.3g} {unit}",
                       "interval": ("-" if pd.isna(r["speed_low"]) else
                                    f"{r['speed_low']:.3g} – {r['speed_high']:.3g}")})
    scale = {"domain": [*labels, ""], "range": [*(colors[label] for label in labels), "#9aa0a8"]}
    x = {"type": "quantitative", "scale": {"type": "log", "domain": domain, "nice": False},
         "axis": {"format": "~g", "grid": True}, "title": "speed: examples per second (log)"}
    y = {"y": ({"field": "score", "type": "quantitative", "title": y_title, "scale": {"zero": False, "padding": 18}}
               if not strip else {"field": "score", "type": "quantitative", "axis": None,
                                  "scale": {"domain": [-1, 1]}})}
    spec = base_spec(values, height=110 if strip else 300)
    spec["usermeta"] = {"bubbleArea": BUBBLE_AREA, "bubbleWidth": BUBBLE_WIDTH, "narrowWidth": NARROW_WIDTH}
    color = {"field": "color_key", "type": "nominal", "scale": scale, "legend": None}
    tooltip = [{"field": "name", "title": "variant" if own else "model"},
               {"field": "speed_text", "title": "examples/s"}, {"field": "interval", "title": "95% interval"},
               {"field": "memory_text", "title": "peak memory"}]
    if not strip:
        tooltip.append({"field": "score", "title": y_title, "format": ".3~g"})
    spec["layer"] = [
        {"mark": {"type": "rule", "strokeWidth": 1.5}, "transform": [{"filter": "datum.low != null"}],
         "encoding": {"x": {**x, "field": "low"}, "x2": {"field": "high"}, **y, "color": color}},
        {"name": "points", "mark": {"type": "point", "filled": True, "opacity": 0.6, "strokeWidth": 1.6},
         "encoding": {"x": {**x, "field": "x"}, **y, "stroke": color,
                      "fill": {"condition": {"test": "datum.noisy", "value": "#ffffff"}, **color},
                      "size": {"field": "memory", "type": "quantitative", "legend": None,
                               "scale": {"type": "linear", "zero": True, "range": [0, BUBBLE_AREA]}},
                      "tooltip": tooltip}},
        {"mark": {"type": "rule", "color": "#8a909a", "strokeWidth": 0.6, "x2Offset": 6,
                  "y2Offset": {"expr": "datum.dy"}}, "transform": [{"filter": "datum.dy != 0"}],
         "encoding": {"x": {**x, "field": "x"}, "x2": {"field": "x"}, **y, "y2": {"field": "score"}}},
        {"mark": {"type": "text", "align": "left", "baseline": "middle", "dx": 7, "dy": {"expr": "datum.dy"},
                  "fontSize": 11, "color": "#30343c"},
         "encoding": {"x": {**x, "field": "x"}, **y, "text": {"field": "name"}}}]
    return spec


# --- a paper, quality, the roofline, failures ------------------------------------------------

def _published_section(report: RunReport) -> str:
    section = report.published
    if section is None:
        return ""
    if section.table is None:
        return notes_html([f"warning: {section.error}"])
    published, both = section.table, section.side_by_side
    variants: dict[str, list[str]] = {}
    for label in label_order(report.frame):
        variants.setdefault(str(report.frame[report.frame["label"] == label]["variant"].iloc[0]), []).append(label)
    ns, rows, notes = published_cells(published)
    header = ["model", "variant", *[f"N={n}" for n in ns]]
    parts = [f'<p class="caption">{esc(published.title)}. Source: {esc(published.citation)} '
             f'{esc(published.meta.get("url", ""))}</p>', '<div class="grid2">']
    for kind, what in (("speed", f"steps/s (speed-up), {published.pass_name}"), ("memory", "peak memory (GB)")):
        table = Table(f"published-{kind}", f"published: {what}", header, numeric=range(2, len(ns) + 2))
        for row in rows[kind]:
            table.add(variants.get(row[1], []), row)
        parts.append(table.html())
    parts.append("</div>")
    if not both.empty:
        parts.append('<div class="grid2">')
        baseline = published.meta.get("baseline_model", "the baseline")
        for kind, what in SIDE_BY_SIDE_KINDS:
            ns2, cells = side_by_side_rows(both, kind)
            table = Table(f"side-by-side-{kind}", f"{what}, measured / published ({published.pass_name}), "
                          f"against {baseline}", ["model (variant)", *[f"N={n}" for n in ns2]],
                          numeric=range(1, len(ns2) + 1))
            for model, row in zip(dict.fromkeys(both["model"]), cells, strict=True):
                table.add([str(both[both["model"] == model]["label"].iloc[0])], row)
            parts.append(table.html())
        parts.append("</div>")
    parts.append(notes_html(agreement_lines(section) + [f"† {note}" for note in notes], "lines"))
    return "".join(parts)


def _quality_section(report: RunReport) -> str:
    parts = []
    table = report.approx
    if table is not None:
        header = approx_header(table)
        t = Table("approx", "approximation error against exact softmax attention (float64)", header,
                  numeric=range(1, len(header)), caption=APPROX_NOTE)
        for row in approx_rows(table, sep=" · "):
            t.add([row[0]], row)
        parts.append(t.html())
    summary = report.mqar
    if summary is not None:
        header = mqar_header(summary)
        t = Table("mqar", "multi-query associative recall (MQAR)", header, numeric=range(2, len(header)),
                  caption=mqar_caption(summary))
        for row in mqar_rows(summary):
            t.add([row[0]], [row[0], row[1], *[Cell(c, _number(c)) for c in row[2:]]])
        parts.append(t.html())
    return "".join(parts)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _roofline_section(report: RunReport) -> str:
    parts = []
    for group in roofline_groups(report):
        table = Table("roofline", f"achieved FLOP/s as % of the measured matmul peak — "
                      f"{describe_setting(group.setting)}", ["variant", "heads", *[f"N={n}" for n in group.ns]],
                      numeric=range(1, len(group.ns) + 2), caption=group.caption)
        for label, heads, cells in group.rows:
            table.add([label], [label, str(heads), *[Cell(group.cell_text(p), p[-1][0] if p[-1][0] is not None
                                                          else p[0][0]) for p in cells]])
        parts.append(table.html())
    return "".join(parts)


def _failed_section(report: RunReport) -> str:
    rows = failure_rows(report.failed)
    if not rows:
        return ""
    table = Table("failed", "cases that did not succeed", FAILURE_COLUMNS, numeric=(2, 3))
    for row in rows:
        table.add([row[1]], [*row[:4], Cell(row[4], css="wrap")])
    parts = [table.html()]
    shown = 0
    for record in report.records:
        if record.get("status") == Status.OK or shown >= TRACEBACKS_SHOWN:
            continue
        texts = [record.get("traceback")] + [p.get("traceback") for p in record.get("passes", [])]
        text = next((t for t in texts if t), None)
        if not text:
            continue
        shown += 1
        case = record.get("case", {})
        cut = text if len(text) <= TRACEBACK_CHARS else text[:TRACEBACK_CHARS] + "\n[... cut]"
        parts.append(f'<details class="traceback"{_labels(case.get("label"))}><summary>traceback: '
                     f'{esc(case.get("label"))} N={esc(case.get("seq_len"))} heads={esc(case.get("heads"))}'
                     f'</summary><pre>{esc(cut)}</pre></details>')
    if report.traceback_note:
        parts.append(f'<p class="caption">{esc(report.traceback_note)}</p>')
    return "".join(parts)


def _labels(label: Any) -> str:
    return labels_attr([str(label)]) if label is not None else ""


"""The report of a run as rich tables for the terminal: the run's medians,
speed and memory against the baseline (LRA Table 2's layout), scaling and
crossovers, the published table beside the measured one, the roofline, the
quality tables and the failed cases. Everything is read from a ``RunReport``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from attnbench.analysis.baseline import describe_setting, label_order, measured_passes, settings_groups
from attnbench.model import SETTING, Status
from attnbench.report.build import RunReport
from attnbench.report.cells import (
    EMPTY,
    FAILURE_COLUMNS,
    RELATIVE_KINDS,
    SCALING_COLUMNS,
    SCALING_LEGEND,
    SIDE_BY_SIDE_KINDS,
    agreement_lines,
    allocator_text,
    cell_time,
    failure_rows,
    fastest_lines,
    fmt_mib,
    lookup_rows,
    published_cells,
    relative_legend,
    relative_rows,
    run_legend,
    scaling_rows,
    side_by_side_rows,
    verdict_text,
)
from attnbench.report.quality import quality_tables
from attnbench.report.roofline import roofline_tables
from attnbench.report.serving import decode_tables


def _setting_title(setting: dict, several: bool) -> str:
    """The setting in a table's title, only when the run has several (else the header says it)."""
    return f" — {describe_setting(setting)}" if several else ""


def run_tables(frame: pd.DataFrame, title: str = "") -> list[Table]:
    """The table printed after a run: rows variant × heads, columns N; each
    cell the median time (ms) of every measured pass, one line each, and the
    peak memory (MiB) of the largest pass (``run_legend`` says so)."""
    tables = []
    groups = settings_groups(frame)
    for setting, group in groups:
        lookup = lookup_rows(group)
        shown = measured_passes(group)
        ns = sorted(set(group["seq_len"]))
        table = Table(title=f"{title}median ms, peak MiB{_setting_title(setting, len(groups) > 1)}")
        table.add_column("variant", no_wrap=True, style="bold")
        table.add_column("heads", justify="right")
        for n in ns:
            table.add_column(f"N={n}", justify="right")
        for label in label_order(group):
            for heads in sorted(set(group[group["label"] == label]["heads"])):
                cells = []
                for n in ns:
                    rows = [lookup.get((label, heads, n, p)) for p in shown]
                    if all(r is None for r in rows):
                        cells.append(EMPTY)
                        continue
                    times = "\n".join(cell_time(r) for r in rows)
                    mems = [r["peak_mem_mib"] for r in rows if r is not None and r["status"] == Status.OK
                            and r["peak_mem_mib"] is not None and not pd.isna(r["peak_mem_mib"])]
                    cells.append(times + (f"\n{fmt_mib(max(mems))}" if mems else ""))
                table.add_row(label, str(heads), *cells)
        tables.append(table)
    return tables


def n_table(title: str, labels: list[str], ns: list[int], rows: list[list[str]],
            caption: str | None = None) -> Table:
    """Rows of ``labels`` (the first bold), then one right-aligned column per N."""
    table = Table(title=title, caption=caption)
    for i, label in enumerate(labels):
        table.add_column(label, no_wrap=True, style=None if i else "bold")
    for n in ns:
        table.add_column(f"N={n}", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def comparison_tables(report: RunReport, pass_name: str) -> list[Table]:
    """Speed and memory against the baseline for one pass, one pair of tables per
    setting and head count: rows variants, columns N (``relative_legend``, said
    once by the caller, explains the ratios and the intervals)."""
    groups = list(relative_rows(report.relative_of(pass_name), pass_name))
    several_settings = len({describe_setting(g[0]) for g in groups}) > 1
    several_heads = len({g[1] for g in groups}) > 1
    return [n_table(f"{pass_name}: {what} vs {report.baseline}" + (f", {heads} heads" if several_heads else "")
                    + _setting_title(setting, several_settings), ["variant"], ns, by_kind[kind])
            for setting, heads, ns, by_kind in groups
            for kind, what in RELATIVE_KINDS]


def failures_table(failed: pd.DataFrame) -> Table | None:
    rows = failure_rows(failed)
    if not rows:
        return None
    table = Table(title="cases that did not succeed")
    for col in FAILURE_COLUMNS:
        table.add_column(col, no_wrap=col != "reason", justify="right" if col in ("N", "heads") else "left")
    for row in rows:
        table.add_row(*row)
    return table


def scaling_table(summary: pd.DataFrame, pass_name: str, baseline: str | None) -> Table:
    """Rich table of ``analysis.scaling.scaling_summary``: exponents of time and
    memory in N with R², and the crossover N against the baseline
    (SCALING_LEGEND, said once by the caller, explains the columns)."""
    table = Table(title=f"{pass_name}: scaling in N, crossover vs {baseline or EMPTY}")
    multi = summary[SETTING].drop_duplicates().shape[0] > 1 if not summary.empty else False
    if multi:
        table.add_column("setting", no_wrap=True)
    for col in SCALING_COLUMNS:
        table.add_column(col, justify="left" if col in ("variant", "x-over") else "right",
                         no_wrap=col != "x-over", style="bold" if col == "variant" else None)
    for r, cells in zip(summary.to_dict("records"), scaling_rows(summary), strict=True):
        table.add_row(*([describe_setting(r)] if multi else []), *cells)
    return table


def published_tables(published: Any) -> list[Table]:
    """The published table as printed in its paper: steps/s (relative speed) and
    peak memory, rows models (with the attnbench variant), columns N."""
    ns, rows, notes = published_cells(published)
    caption = published.citation + (" † " + "; ".join(notes) if notes else "")
    return [n_table(f"published: {published.title} — {what}, {published.pass_name}", ["model", "variant"],
                    ns, rows[kind], caption=caption if kind == "memory" else None)
            for kind, what in (("speed", "steps/s (speed-up)"), ("memory", "peak memory (GB)"))]


def side_by_side_tables(both: pd.DataFrame, published: Any) -> list[Table]:
    """Measured against published, relative to each side's baseline model."""
    if both.empty:
        return []
    baseline = published.meta.get("baseline_model", "the baseline")
    return [n_table(f"{what}, measured / {published.name} ({published.pass_name}), against {baseline}",
                    ["model (variant)"], *side_by_side_rows(both, kind))
            for kind, what in SIDE_BY_SIDE_KINDS]


def report_sections(report: RunReport) -> list:
    """Everything ``attnbench report`` prints after the run and comparison tables:
    per pass the scaling exponents and crossovers; the published table (when the
    suite names one) with the rank correlation of relative speeds."""
    out: list = []
    if report.frame.empty:
        return out
    for pass_name, summary in report.scaling.items():
        out.append(scaling_table(summary, pass_name, report.baseline))
    out.append(SCALING_LEGEND)
    section = report.published
    if section is not None:
        if section.table is None:
            out.append(f"[yellow]warning:[/] {section.error}")
            return out
        out.extend(published_tables(section.table))
        out.extend(side_by_side_tables(section.side_by_side, section.table))
        out.extend(agreement_lines(section))
    return out


def terminal_report(report: RunReport) -> list:
    """``attnbench report``, in order: the verdict on the run's timings; the header; the run's tables; against the
    baseline the speed and memory tables of the reported passes (when there is
    more than one variant); the roofline and the run's warnings; scaling,
    crossovers and the published table; quality; the failed cases."""
    frame = report.frame
    out: list = [verdict_text(report.verdict, markup=True), report_header(report), *run_tables(frame),
                 run_legend(frame)]
    if report.baseline is not None and report.several_variants:
        for pass_name in report.passes:
            out.extend(comparison_tables(report, pass_name))
        out.append(relative_legend(report))
    out.extend(roofline_tables(report))
    out.extend(decode_tables(report))
    out.extend(report.notes)
    out.extend(report_sections(report))
    out.extend(quality_tables(report))
    failed = failures_table(report.failed)
    if failed is not None:
        out.append(failed)
        if report.traceback_note:
            out.append(report.traceback_note)
    out.extend(fastest_lines(report))
    return out


def run_end(report: RunReport) -> list:
    """What ``attnbench run`` prints on stdout when it ends: the verdict, the
    run's tables and their legend, the quality tables, the failed cases, the
    fastest variant of each pass."""
    out: list = [verdict_text(report.verdict, markup=True), *run_tables(report.frame)]
    if not report.frame.empty:
        out.append(run_legend(report.frame))
    out.extend(quality_tables(report))
    failed = failures_table(report.failed)
    if failed is not None:
        out.append(failed)
    out.extend(fastest_lines(report))
    return out


def report_header(report: RunReport) -> str:
    """The report's first lines: run id, suite, date, machine, and the setting
    when there is one (the tables' titles then leave it out)."""
    run = report.run
    meta, env = run.meta, run.meta.get("environment") or {}
    gpus = env.get("gpus") or []
    gpu = ", ".join(g.get("name", "?") if isinstance(g, dict) else str(g) for g in gpus) if gpus else ""
    cores = env.get("cpu_cores_logical")
    machine = ", ".join(x for x in (gpu, env.get("cpu_model"), f"{cores} cores" if cores else "",
                                    f"torch {env['torch']}" if env.get("torch") else "") if x)
    started = str(meta.get("started_at") or "")[:16].replace("T", " ")
    lines = [f"run {run.run_id} · suite {meta.get('suite_name') or EMPTY} · {started or EMPTY} · "
             f"{meta.get('status') or EMPTY}", f"machine: {machine or EMPTY}"]
    allocator = allocator_text(report.allocator)
    if allocator:
        lines.append(f"allocator: {allocator}")
    groups = settings_groups(report.frame)
    if len(groups) == 1:
        lines.append(f"setting: {describe_setting(groups[0][0])}")
    return "\n".join(lines)


def runs_table(rows: list[dict], root: str | Path) -> Table:
    """``attnbench runs``: one row per run directory (``store.results.run_summaries``)."""
    table = Table(title=f"runs in {root}", caption="attnbench report RUN_DIR: one run's tables",
                  caption_justify="left")
    sharded = any(r.get("shard") for r in rows)
    for col in ("run", "suite", *(("shard",) if sharded else ()), "started", "status", "cases", "machine"):
        table.add_column(col, no_wrap=col in ("run", "started", "shard"), style="bold" if col == "run" else None)
    for r in rows:
        cases = f"{r['cases_done']}/{r['cases_total']}" if r["cases_total"] is not None else "-"
        started = str(r["started_at"] or "-")[:16].replace("T", " ")
        shard = (r.get("shard") or "-",) if sharded else ()
        table.add_row(Path(r["run_dir"]).name, r["suite"] or "-", *shard, started, r["status"] or "-", cases,
                      r["machine"] or "-")
    return table

"""The whole report of a run as a markdown document (``attnbench report --markdown``):
the same rows as the terminal report (``report.py``), laid out as markdown tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnbench.analysis.baseline import describe_setting, label_order, table_groups
from attnbench.model import Status
from attnbench.report.build import RunReport
from attnbench.report.cells import (
    FAILURE_COLUMNS,
    NOISY_MARK,
    RELATIVE_KINDS,
    SCALING_COLUMNS,
    SCALING_LEGEND,
    SIDE_BY_SIDE_KINDS,
    agreement_lines,
    allocator_text,
    cell_time,
    failure_rows,
    fastest_lines,
    fmt_ms,
    lookup_rows,
    md_escape,
    plain_notes,
    published_cells,
    relative_rows,
    scaling_rows,
    side_by_side_rows,
    verdict_text,
)
from attnbench.report.quality import quality_markdown
from attnbench.report.serving import decode_markdown
from attnbench.store.results import write_atomic


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _relative_md(data: pd.DataFrame, baseline: str, pass_name: str) -> list[str]:
    """The speed tables of every setting, then the memory tables."""
    groups = list(relative_rows(data, pass_name))
    return [f"**{what} vs {md_escape(baseline)}** — {describe_setting(setting)}, {heads} heads\n\n"
            + md_table(["variant", *[f"N={n}" for n in ns]], by_kind[kind])
            for kind, what in RELATIVE_KINDS for setting, heads, ns, by_kind in groups]


def _medians_md(data: pd.DataFrame, pass_name: str) -> list[str]:
    parts = []
    for setting, heads, sub in table_groups(data):
        lookup = lookup_rows(sub)
        ns = sorted(set(sub["seq_len"]))
        rows = []
        for label in label_order(sub):
            cells = []
            for n in ns:
                r = lookup.get((label, heads, n, pass_name))
                if r is None:
                    cells.append("")
                    continue
                iqr = r["iqr_ms"] if r["status"] == Status.OK else None
                cells.append(f"{cell_time(r)} ± {fmt_ms(iqr / 2)}" if iqr and not pd.isna(iqr)
                             else cell_time(r))
            rows.append([label, *cells])
        parts.append(f"**median ms (± IQR/2)** — {describe_setting(setting)}, {heads} heads\n\n"
                     + md_table(["variant", *[f"N={n}" for n in ns]], rows))
    return parts


def markdown_report(report: RunReport, plot: str | None = None) -> str:
    """The whole report as a markdown document: run metadata, per pass the
    medians, the LRA-style speed and memory tables against the baseline and the
    scaling exponents with crossovers; the published table beside them with the
    rank correlation; the cases that failed."""
    run, frame, baseline = report.run, report.frame, report.baseline
    meta = run.meta
    env = meta.get("environment") or {}
    lines = [f"# attnbench report: {md_escape(meta.get('suite_name') or run.run_id)}", "",
             f"> **{verdict_text(report.verdict)}**", ""]
    notes = plain_notes(report)
    if notes:  # the file people share carries what the terminal warned of
        lines += [f"> {md_escape(note)}" + ("  " if i < len(notes) - 1 else "") for i, note in enumerate(notes)]
        lines += [""]
    facts = [("run", run.run_id), ("suite", meta.get("suite_path")), ("started", meta.get("started_at")),
             ("finished", meta.get("finished_at")), ("status", meta.get("status")),
             ("attnbench", env.get("attnbench")), ("git commit", env.get("git_commit")),
             ("torch", env.get("torch")), ("python", env.get("python")), ("CPU", env.get("cpu_model")),
             ("threads", env.get("torch_threads")), ("allocator", allocator_text(report.allocator)),
             ("GPUs", _gpus(env.get("gpus"))), ("OS", env.get("os")),
             ("command", " ".join(meta.get("command") or []) or None), ("baseline", baseline)]
    lines += [f"- **{k}**: {md_escape(v)}" for k, v in facts if v not in (None, "", [])]
    lines += ["", f"Cells: steps/s = 1000 / median ms of one pass; speed-up = baseline time / time, paired "
                  f"within rounds, with its 95% interval over this run's rounds in brackets (the drift between "
                  f"runs is not in it); `{NOISY_MARK}` marks a noisy "
                  "figure (IQR/median > 10%).", ""]
    if plot:
        lines += [f"![time and memory vs N]({plot})", ""]
    quality = quality_markdown(report)
    if frame.empty:
        lines += ["No finished cases.", "", *quality]
        return "\n".join(lines) + "\n"
    for pass_name in report.passes:
        data = frame[frame["pass"] == pass_name]
        lines += [f"## {pass_name}", ""]
        for part in _medians_md(data, pass_name):
            lines += [part, ""]
        if baseline is not None and baseline in set(frame["label"]):
            for part in _relative_md(report.relative_of(pass_name), baseline, pass_name):
                lines += [part, ""]
        rows = scaling_rows(report.scaling[pass_name])
        lines += [f"**scaling in N and crossover vs {md_escape(baseline)}** ({SCALING_LEGEND})", "",
                  md_table(list(SCALING_COLUMNS), rows, ["l", "r", "r", "r", "r", "r", "r", "r", "l"]), ""]
    lines += decode_markdown(report, md_table, md_escape)
    section = report.published
    if section is not None:
        if section.table is None:
            lines += [f"> warning: {md_escape(section.error)}", ""]
        else:
            published, both = section.table, section.side_by_side
            lines += _published_md(published)
            for kind, what in SIDE_BY_SIDE_KINDS:
                if both.empty:
                    break
                ns, rows = side_by_side_rows(both, kind)
                lines += [f"**{what}, measured / published ({published.pass_name}), against "
                          f"{published.meta.get('baseline_model', 'the baseline')}**", "",
                          md_table(["model (variant)", *[f"N={n}" for n in ns]], rows), ""]
            lines += [line for text in agreement_lines(section) for line in (md_escape(text), "")]
    lines += quality
    failed = failure_rows(report.failed)
    if failed:
        lines += ["## cases that did not succeed", "",
                  md_table(list(FAILURE_COLUMNS), failed, ["l", "l", "r", "r", "l"]), ""]
    summary = fastest_lines(report)
    if summary:
        lines += ["## summary", "", *[f"- {md_escape(line)}" for line in summary], ""]
    return "\n".join(lines) + "\n"


def _gpus(gpus) -> str | None:
    if not gpus:
        return None
    if isinstance(gpus, list):
        return ", ".join(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in gpus)
    return str(gpus)


def _published_md(published) -> list[str]:
    ns, rows, notes = published_cells(published)
    header = ["model", "variant", *[f"N={n}" for n in ns]]
    align = ["l", "l"] + ["r"] * len(ns)
    speed, memory = rows["speed"], rows["memory"]
    notes = [f"† {note}" for note in notes]
    out = [f"## published: {published.title}", "", f"Source: {published.citation} {published.meta.get('url', '')}",
           "", f"Setting: {' '.join(str(published.meta.get('setting', '')).split())}", "",
           f"**steps/s (speed-up), {published.pass_name}**", "", md_table(header, speed, align), "",
           "**peak memory (GB)**", "", md_table(header, memory, align), ""]
    if notes:
        out += notes + [""]
    return out


def write_text(path: str | Path, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, text)

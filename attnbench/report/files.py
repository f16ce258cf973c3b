"""The files a report writes: the tidy CSV, the markdown document, the plot of
time and memory against N, the trade-off chart and the HTML page, all from one
``RunReport``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from attnbench.errors import AttnbenchError
from attnbench.report.build import RunReport
from attnbench.store.results import write_csv


@dataclass(frozen=True)
class ReportFiles:
    """Where ``attnbench report`` writes its files (None: not asked for)."""

    csv: Path | None = None
    markdown: Path | None = None
    plot: Path | None = None
    plot_tradeoff: Path | None = None
    html: Path | None = None
    plot_decode: Path | None = None


def write_report_files(report: RunReport, files: ReportFiles,
                       messages: list[str] | None = None) -> list[Path]:
    """Write every file asked for; returns the paths written, in order. What a
    reader should know about a file (a font without a label's characters) is
    appended to ``messages``."""
    written = []
    if files.csv is not None:  # with the paired speed-ups, their intervals and the roofline fraction
        write_csv(report.tidy, files.csv)
        written.append(files.csv)
    title = str(report.meta.get("suite_name") or "")
    banner = report.verdict.headline if report.verdict.unreliable else None
    if files.plot is not None:
        from attnbench.report.plots import plot_run

        plot_run(report.frame, files.plot, report.records, title=title, baseline=report.baseline, banner=banner,
                 messages=messages)
        written.append(files.plot)
    if files.plot_tradeoff is not None:
        from attnbench.report.plots import MQAR_QUALITY_LABEL, plot_tradeoff

        rows = report.relative if report.baseline is not None else report.frame  # with the paired intervals
        plot_tradeoff(rows, files.plot_tradeoff, title=title, quality=report.measured_scores or None,
                      quality_label=MQAR_QUALITY_LABEL, banner=banner,
                      messages=messages)
        written.append(files.plot_tradeoff)
    if files.plot_decode is not None:
        from attnbench.report.serving import plot_decode

        if report.decode.empty:
            raise AttnbenchError(f"{files.plot_decode}: not written: the run has no measured decode case "
                                 "(a suite with passes: [prefill, decode] and causal: true measures them)")
        plot_decode(report, files.plot_decode, banner=banner)
        written.append(files.plot_decode)
    if files.markdown is not None:
        from attnbench.report.markdown import markdown_report, write_text

        plot = files.plot
        link = os.path.relpath(plot.resolve(), files.markdown.resolve().parent) if plot is not None else None
        write_text(files.markdown, markdown_report(report, plot=link))
        written.append(files.markdown)
    if files.html is not None:
        from attnbench.report.html import html_report, write_html

        written.append(write_html(files.html, html_report(report)))
    return written

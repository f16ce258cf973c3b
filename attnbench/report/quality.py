"""The quality tables of ``attnbench report``: rich for the terminal, markdown, JSON.

* approximation error: one row per variant, one column per (regime, N); a cell
  is the relative output error and, where the rows were read, the rows' mean
  total variation; a mechanism that does not approximate attention says so.
* MQAR: one row per variant, the held-out accuracy of each seed, their mean and
  spread; the caption gives the sizes and the rank correlation between seeds.
"""

from __future__ import annotations

import statistics
from typing import Any

from rich.table import Table

from attnbench.analysis.quality import ApproxTable, MQARSummary
from attnbench.quality import NOT_AN_APPROXIMATION
from attnbench.report.build import RunReport
from attnbench.report.cells import md_escape

APPROX_NOTE = ("cells: ‖core − softmax‖/‖softmax‖ of the output (mean over seeds); tv: mean total variation "
               "between the implied and the exact attention rows (½‖a−p‖₁, 0..1 for distributions); H: mean "
               "row entropy of the exact attention (nats)")


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.1e}"


def approx_header(table: ApproxTable) -> list[str]:
    out = ["variant"]
    for regime, n in table.columns:
        entropies = [c.ref_entropy for (_, r, m), c in table.cells.items()
                     if (r, m) == (regime, n) and c.ref_entropy is not None]
        h = f" H={statistics.median(entropies):.1f}" if entropies else ""
        out.append(f"{regime} N={n}{h}")
    return out


def approx_rows(table: ApproxTable, sep: str = "\n") -> list[list[str]]:
    rows = []
    for label in table.labels:
        cells = [table.cells.get((label, regime, n)) for regime, n in table.columns]
        if all(c is None or c.status == NOT_AN_APPROXIMATION for c in cells):
            rows.append([label, NOT_AN_APPROXIMATION] + [""] * (len(cells) - 1))
            continue
        row = [label]
        for c in cells:
            if c is None:
                row.append("")
            elif c.status != "ok":
                row.append(c.status)
            else:
                tv = f"{sep}tv {_fmt(c.row_tv, 2)}" if c.row_tv is not None else ""
                row.append(f"{_fmt(c.output_error)}{tv}")
        rows.append(row)
    return rows


MQAR_SIZES = ("vocab", "seq_len", "pairs", "dim", "heads", "layers", "steps", "batch", "lr")


def mqar_header(summary: MQARSummary) -> list[str]:
    return ["variant", "causal", *[f"seed {s}" for s in summary.seeds], "mean", "spread", "train s"]


def mqar_rows(summary: MQARSummary) -> list[list[str]]:
    rows = []
    for r in summary.rows:
        seeds = [(f"{r.accuracies[s]:.3f}" if r.accuracies.get(s) is not None else r.statuses.get(s, ""))
                 for s in summary.seeds]
        spread = "-" if r.low is None or len(summary.seeds) < 2 else f"{r.high - r.low:.3f}"
        rows.append([r.label, "yes" if r.causal else "no", *seeds, _fmt(r.mean), spread, f"{r.train_s:.0f}"])
    return rows


def mqar_caption(summary: MQARSummary) -> str:
    sizes = ", ".join(f"{k} {summary.config.get(k)}" for k in MQAR_SIZES if k in summary.config)
    rho = summary.seed_rank_correlation
    rho_text = ("" if rho is None else
                f"; Spearman ρ between seeds {summary.seeds[0]} and {summary.seeds[1]}: {rho:+.2f}")
    return f"held-out accuracy at the queried positions ({sizes}){rho_text}"


def quality_tables(report: RunReport) -> list[Table]:
    """The rich tables of a run's quality records (none without records)."""
    out = []
    table = report.approx
    if table is not None:
        t = Table(title="approximation error against exact softmax attention (float64)", caption=APPROX_NOTE)
        for i, col in enumerate(approx_header(table)):
            t.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0, style="bold" if i == 0 else None)
        for row in approx_rows(table):
            t.add_row(*row)
        out.append(t)
    summary = report.mqar
    if summary is not None:
        t = Table(title="multi-query associative recall (MQAR)", caption=mqar_caption(summary))
        for i, col in enumerate(mqar_header(summary)):
            t.add_column(col, justify="left" if i < 2 else "right", no_wrap=True, style="bold" if i == 0 else None)
        for row in mqar_rows(summary):
            t.add_row(*row)
        out.append(t)
    return out


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(md_escape(c) for c in cells) + " |"

    return [line(header), "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|", *map(line, rows)]


def quality_markdown(report: RunReport) -> list[str]:
    """The quality section of the markdown report (no lines without records)."""
    lines: list[str] = []
    table = report.approx
    if table is not None:
        lines += ["## approximation error against exact softmax attention", "", APPROX_NOTE + ".", "",
                  *_md(approx_header(table), approx_rows(table, sep=" · ")), ""]
    summary = report.mqar
    if summary is not None:
        lines += ["## multi-query associative recall (MQAR)", "", mqar_caption(summary) + ".", "",
                  *_md(mqar_header(summary), mqar_rows(summary)), ""]
    return lines


def quality_json(report: RunReport) -> dict[str, Any] | None:
    """``report --json``'s quality: the summaries and every record; None without records."""
    records = report.run.quality
    if not records:
        return None
    table, summary = report.approx, report.mqar
    return {"approx": None if table is None else table.to_dict(),
            "mqar": None if summary is None else summary.to_dict(), "records": records}

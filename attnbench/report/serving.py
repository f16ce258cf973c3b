"""The serving part of a report: the decode table (µs per token, tokens/s, the
cache or state, the bandwidth reached against its bound), the decode scaling
exponents and the crossovers against the KV cache, in the terminal, markdown
and JSON, and the decode chart (time per token and cache size against N)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from attnbench.analysis.serving import crossover_text
from attnbench.report.build import RunReport

DECODE_LEGEND = ("decode: each cell the time per generated token (µs), the cache or state after the prompt "
                 "and the bandwidth reached as % of its bound (the bytes a step must move, cache or state "
                 "+ weights + the token, over the run's calibrated copy bandwidth); tokens/s = batch × 10⁶ / µs")
SCALING_LEGEND = ("decode k: exponent of the step time in N (a KV cache ≈ 1 once it outgrows the CPU caches, a "
                  "recurrent state ≈ 0); cache k: of the cache or state; fixed µs: the step's time at the smallest "
                  "N beyond its bound; x-over: the N from which it beats the KV cache per token (time) and in "
                  "size (memory), interpolated log-log")
SCALING_COLUMNS = ("variant", "B", "N's", "decode k", "R²", "cache k", "fixed µs", "x-over time", "x-over memory")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _mib(value: float) -> str:
    return _fmt(value, ".3g") if value is not None and not pd.isna(value) and value < 10 else _fmt(value, ",.0f")


def _size(mib: float) -> str:
    """A cache or state size in the unit that keeps it short: 750 B, 4.2 KiB, 32 MiB."""
    if mib is None or pd.isna(mib):
        return "-"
    if mib >= 1:
        return f"{mib:.3g} MiB" if mib < 1000 else f"{mib / 1024:.3g} GiB"
    kib = mib * 1024
    return f"{kib:.3g} KiB" if kib >= 1 else f"{kib * 1024:.0f} B"


def decode_cells(rows: pd.DataFrame) -> tuple[list[int], list[tuple[str, int, list[list[str]]]]]:
    """(N's, [(label, batch, per N [µs, MiB, %])]) of the decode table."""
    ns = sorted(set(rows["seq_len"]))
    out = []
    for (label, batch), group in rows.groupby(["label", "batch"], sort=False):
        by_n = {int(r["seq_len"]): r for _, r in group.iterrows()}
        cells = []
        for n in ns:
            r = by_n.get(n)
            if r is None:
                cells.append(["-"])
                continue
            noisy = "~" if r["noisy"] else ""
            pct = "-" if pd.isna(r["bandwidth_pct"]) else f"{r['bandwidth_pct']:.0f}%"
            cells.append([f"{r['us_per_token']:,.0f}{noisy} µs", _size(r["cache_mib"]), pct])
        out.append((str(label), int(batch), cells))
    return ns, out


def scaling_rows(report: RunReport) -> list[list[str]]:
    """One row per decode series: exponents, fixed cost and the crossovers."""
    ns = sorted(set(report.decode["seq_len"])) if not report.decode.empty else [0]
    span = (int(ns[0]), int(ns[-1]))
    crossing = {(c.label, c.batch): c for c in report.crossovers}
    rows = []
    for s in report.decode_scaling:
        c = crossing.get((s.label, s.batch))
        rows.append([s.label, str(s.batch), str(s.points), _fmt(s.time_exponent, "+.2f"), _fmt(s.time_r2, ".2f"),
                     _fmt(s.cache_exponent + 0.0, "+.2f"), _fmt(s.fixed_us, ",.0f"),
                     crossover_text(c.time_n, c.time_side, span) if c else "-",
                     crossover_text(c.memory_n, c.memory_side, span) if c else "-"])
    return rows


def decode_tables(report: RunReport) -> list:
    """The terminal's decode section; nothing when the run has no decode case."""
    rows = report.decode
    if rows.empty:
        return []
    ns, body = decode_cells(rows)
    table = Table(title="decode: µs per token, cache or state, % of the bandwidth bound")
    table.add_column("variant", no_wrap=True, style="bold")
    table.add_column("B", justify="right")
    for n in ns:
        table.add_column(f"N={n}", justify="right")
    for label, batch, cells in body:
        table.add_row(label, str(batch), *["\n".join(c) for c in cells])
    out: list = [table, DECODE_LEGEND]
    scaling = scaling_rows(report)
    if scaling:
        fits = Table(title=f"decode scaling in N and crossover vs the KV cache{_reference(report)}")
        for i, column in enumerate(SCALING_COLUMNS):
            fits.add_column(column, no_wrap=i == 0, style="bold" if i == 0 else None,
                            justify="left" if i == 0 else "right")
        for row in scaling:
            fits.add_row(*row)
        out += [fits, SCALING_LEGEND]
    return out


def _reference(report: RunReport) -> str:
    refs = sorted({c.reference.split(" ")[0] for c in report.crossovers})
    return f" ({', '.join(refs)})" if refs else ""


def decode_markdown(report: RunReport, md_table: Any, md_escape: Any) -> list[str]:
    """The decode section of the markdown report (``md_table`` escapes its cells)."""
    rows = report.decode
    if rows.empty:
        return []
    header = ["variant", "B", "N", "µs/token", "tokens/s", "cache MiB", "GB/s", "% of bound"]
    body = [[str(r.label), str(r.batch), str(r.seq_len), f"{r.us_per_token:,.0f}{'~' if r.noisy else ''}",
             f"{r.tokens_per_s:,.0f}", _mib(r.cache_mib), _fmt(r.bandwidth_gbs, ".3g"),
             _fmt(r.bandwidth_pct, ".0f")] for r in rows.itertuples()]
    lines = ["## decode", "", f"{md_escape(DECODE_LEGEND)}.", "",
             md_table(header, body, ["l", "r", "r", "r", "r", "r", "r", "r"]), ""]
    scaling = scaling_rows(report)
    if scaling:
        lines += [f"**decode scaling in N and crossover vs the KV cache{md_escape(_reference(report))}** "
                  f"({md_escape(SCALING_LEGEND)})", "",
                  md_table(list(SCALING_COLUMNS), scaling,
                           ["l", "r", "r", "r", "r", "r", "r", "r", "r"]), ""]
    return lines


def decode_json(report: RunReport) -> dict[str, Any]:
    """``report --json``'s decode part: the table, the exponents, the crossovers."""
    from dataclasses import asdict

    from attnbench.store.results import frame_records

    return {"table": frame_records(report.decode), "scaling": [asdict(s) for s in report.decode_scaling],
            "crossovers": [asdict(c) for c in report.crossovers]}


def plot_decode(report: RunReport, path: str | Path, banner: str | None = None) -> Path:
    """Decode time per token (left) and cache or state size (right) against N,
    log-log, one line per variant and batch; the run's banner when it is unreliable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attnbench.report.plots import draw_banner, n_label, readable_log_ticks

    top = 0.14 if banner else 0.0  # room for the banner's lines above the title

    rows = report.decode
    path = Path(path)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.6))
    # A colour per mechanism, a line style per key/value heads (solid: as many as query heads).
    mechanisms = list(dict.fromkeys(label.split(" kv")[0] for label in rows["label"]))
    palette = plt.get_cmap("tab10" if len(mechanisms) <= 10 else "tab20")
    colors = {m: palette(i % palette.N) for i, m in enumerate(mechanisms)}
    styles = {kv: style for kv, style in zip(sorted(set(rows["kv_heads"]), reverse=True),
                                             ("-", "--", ":", "-.") * 4, strict=False)}
    for (label, batch, kv), group in rows.groupby(["label", "batch", "kv_heads"], sort=False):
        name = label if rows["batch"].nunique() == 1 else f"{label} B={batch}"
        group = group.sort_values("seq_len")
        color = colors[label.split(" kv")[0]]
        ax_t.plot(group["seq_len"], group["us_per_token"], marker="o", label=name, color=color,
                  linestyle=styles[kv])
        noisy = group[group["noisy"]]
        ax_t.scatter(noisy["seq_len"], noisy["us_per_token"], facecolors="white", edgecolors=color, zorder=3)
        ax_m.plot(group["seq_len"], group["cache_mib"], marker="o", color=color, linestyle=styles[kv], label=name)
    ns = sorted(set(rows["seq_len"]))
    for ax, what in ((ax_t, "µs per generated token"), (ax_m, "cache or state after the prompt (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [n_label(int(n)) for n in ns])
        ax.set_xlabel("N (prompt length)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        readable_log_ticks(ax)
    handles, labels = ax_t.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    rows_of_legend = -(-len(labels) // 5)
    title = str(report.meta.get("suite_name") or "")
    fig.suptitle(f"{title}: time per generated token and the cache or state it reads, against the prompt's N "
                 "(hollow: noisy; line style: key/value heads)".lstrip(": "), y=0.98 - top, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * rows_of_legend + 0.02, 1, 0.94 - top))
    draw_banner(fig, banner)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

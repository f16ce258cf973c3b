"""Rendering results: rich tables for the terminal, markdown, CSV."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from attnbench.analysis import describe_setting, label_order, settings_groups, with_baseline

STATUS_SHORT = {"oom": "OOM", "timeout": "timeout", "crashed": "crashed", "error": "error", "skipped": "skipped"}
NOISY_MARK = "~"
PASS_SHORT = {"forward": "fwd", "backward": "bwd", "forward_backward": "f+b"}


def fmt_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_mib(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _cell_time(row: pd.Series | None) -> str:
    if row is None:
        return "-"
    if row["status"] != "ok":
        return STATUS_SHORT.get(row["status"], row["status"])
    return fmt_ms(row["median_ms"]) + (NOISY_MARK if row["noisy"] else "")


def _lookup(group: pd.DataFrame) -> dict[tuple, pd.Series]:
    return {(r["label"], r["heads"], r["seq_len"], r["pass"]): pd.Series(r)
            for r in group.to_dict("records")}


def run_tables(frame: pd.DataFrame, title: str = "") -> list[Table]:
    """The table printed after a run: rows variant × heads, columns N; each
    cell the median forward and forward+backward time (ms) and the peak memory
    (MiB) of the largest pass."""
    tables = []
    for setting, group in settings_groups(frame):
        lookup = _lookup(group)
        passes = [p for p in ("forward", "backward", "forward_backward") if p in set(group["pass"])]
        shown = [p for p in passes if p != "backward"] or passes
        ns = sorted(set(group["seq_len"]))
        table = Table(title=f"{title}{describe_setting(setting)}",
                      caption=f"median ms ({' / '.join(PASS_SHORT[p] for p in shown)}) · peak MiB; "
                              f"{NOISY_MARK} = noisy (IQR/median > 10%)")
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
                        cells.append("")
                        continue
                    times = " / ".join(_cell_time(r) for r in rows)
                    mems = [r["peak_mem_mib"] for r in rows if r is not None and r["status"] == "ok"
                            and r["peak_mem_mib"] is not None and not pd.isna(r["peak_mem_mib"])]
                    cells.append(times + (f"\n{fmt_mib(max(mems))} MiB" if mems else ""))
                table.add_row(label, str(heads), *cells)
        tables.append(table)
    return tables


def relative_cell(row: pd.Series | None, kind: str) -> str:
    """LRA Table 2 style: 'steps/s (speed-up x)' or 'MiB (ratio x)'."""
    if row is None:
        return ""
    if row["status"] != "ok":
        return STATUS_SHORT.get(row["status"], row["status"])
    noisy = NOISY_MARK if row["noisy"] and kind == "speed" else ""
    if kind == "speed":
        rate = 1e3 / row["median_ms"]
        value = f"{rate:,.1f}" if rate < 1000 else f"{rate:,.0f}"
        ratio = row.get("speedup")
    else:
        value = fmt_mib(row["peak_mem_mib"])
        ratio = row.get("mem_ratio")
    if ratio is None or pd.isna(ratio):
        return value + noisy
    return f"{value}{noisy} ({ratio:.2f}x)" if ratio < 10 else f"{value}{noisy} ({ratio:.1f}x)"


def comparison_tables(frame: pd.DataFrame, baseline: str, pass_name: str) -> list[Table]:
    """Speed and memory against ``baseline`` for one pass, one pair of tables per
    setting and head count: rows variants, columns N."""
    tables = []
    data = with_baseline(frame[frame["pass"] == pass_name], baseline)
    for setting, group in settings_groups(data):
        for heads in sorted(set(group["heads"])):
            sub = group[group["heads"] == heads]
            lookup = _lookup(sub)
            ns = sorted(set(sub["seq_len"]))
            for kind, what in (("speed", "steps/s (speed-up)"), ("memory", "peak MiB (ratio)")):
                table = Table(title=f"{pass_name}: {what} vs {baseline} — {describe_setting(setting)}, "
                                    f"{heads} heads",
                              caption="speed-up = baseline time / time; memory ratio = peak / baseline peak")
                table.add_column("model", no_wrap=True, style="bold")
                for n in ns:
                    table.add_column(f"N={n}", justify="right")
                for label in label_order(sub):
                    table.add_row(label, *[relative_cell(lookup.get((label, heads, n, pass_name)), kind)
                                           for n in ns])
                tables.append(table)
    return tables


def failures_table(frame: pd.DataFrame) -> Table | None:
    bad = frame[frame["status"] != "ok"].drop_duplicates(subset=["case_id", "status"])
    if bad.empty:
        return None
    table = Table(title="cases that did not succeed")
    for col in ("status", "variant", "N", "heads", "reason"):
        table.add_column(col, no_wrap=col != "reason", justify="right" if col in ("N", "heads") else "left")
    for r in bad.itertuples(index=False):
        table.add_row(STATUS_SHORT.get(r.status, r.status), r.label, str(r.seq_len), str(r.heads),
                      str(r.error or ""))
    return table

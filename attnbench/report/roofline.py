"""The roofline table (each case's achieved FLOP/s as a percentage of the
matmul rate measured at the run's start) and the calibrations of one or two
runs side by side."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.table import Table

from attnbench.analysis.baseline import describe_setting, label_order, settings_groups
from attnbench.analysis.roofline import best_rates, calibrations
from attnbench.analysis.verdict import PEAK_FRACTION_MAX
from attnbench.bench.calibration import format_rate
from attnbench.model import PASS_SHORT, REPORTED_PASSES, Status
from attnbench.report.build import RunReport


def roofline_tables(report: RunReport) -> list[Table]:
    """Per setting: rows variant × heads, columns N, cells the achieved FLOP/s
    as a percentage of the measured matmul peak (forward / forward+backward)."""
    if report.frame.empty or not report.calibrations:
        return []
    peaks = report.calibrations
    tables = []
    for setting, group in settings_groups(report.roofline):
        cal = peaks.get((setting["device"], setting["dtype"]))
        if cal is None or group["peak_fraction"].isna().all():
            continue
        # past the higher of the start's and the end's rates a figure is impossible
        ceiling = PEAK_FRACTION_MAX * best_rates(report.meta)[(setting["device"], setting["dtype"])] \
            / cal["matmul_flops"]
        shown = [p for p in REPORTED_PASSES if p in set(group["pass"])]
        ns = sorted(set(group["seq_len"]))
        balance = cal["matmul_flops"] / cal["bandwidth_bytes_per_s"]
        table = Table(title=f"roofline: achieved FLOP/s as % of the measured matmul peak — "
                            f"{describe_setting(setting)}",
                      caption=f"peak {format_rate('matmul_flops', cal['matmul_flops'])} (n={cal.get('matmul_n')} "
                              f"matmul), copy bandwidth {format_rate('bw', cal['bandwidth_bytes_per_s'])}: a "
                              f"layer needs over {balance:.0f} FLOPs per byte moved to reach the peak; "
                              f"cells {' / '.join(PASS_SHORT[p] for p in shown)}"
                              + ("; ! above the measured peak: impossible, the machine changed under the run "
                                 "(see the verdict)" if (group["peak_fraction"] > ceiling).any() else ""))
        table.add_column("variant", no_wrap=True, style="bold")
        table.add_column("heads", justify="right")
        for n in ns:
            table.add_column(f"N={n}", justify="right")
        lookup = {(r["label"], r["heads"], r["seq_len"], r["pass"]): r for r in group.to_dict("records")}
        for label in label_order(group):
            for heads in sorted(set(group[group["label"] == label]["heads"])):
                cells = []
                for n in ns:
                    parts = []
                    for p in shown:
                        r = lookup.get((label, heads, n, p))
                        ok = r is not None and r["status"] == Status.OK and not pd.isna(r["peak_fraction"])
                        impossible = ok and r["peak_fraction"] > ceiling
                        parts.append(f"{100 * r['peak_fraction']:.0f}%" + ("!" if impossible else "") if ok else "-")
                    cells.append(" / ".join(parts))
                table.add_row(label, str(heads), *cells)
        tables.append(table)
    return tables


def calibration_table(metas: list[tuple[str, dict[str, Any]]]) -> Table | None:
    """The calibrations of one or more runs side by side: per run and device,
    the matmul rate and copy bandwidth at the start and the end."""
    rows = []
    for name, meta in metas:
        starts, ends = calibrations(meta), calibrations(meta, "end")
        for (device, dtype), start in starts.items():
            end = ends.get((device, dtype), {})
            rows.append([name, f"{device} {dtype}", format_rate("matmul_flops", start.get("matmul_flops")),
                         format_rate("matmul_flops", end.get("matmul_flops")),
                         format_rate("bw", start.get("bandwidth_bytes_per_s")),
                         format_rate("bw", end.get("bandwidth_bytes_per_s"))])
    if not rows:
        return None
    table = Table(title="calibration: the machine at the start and the end of each run")
    for col in ("run", "device", "matmul start", "matmul end", "bandwidth start", "bandwidth end"):
        table.add_column(col, justify="left" if col in ("run", "device") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table

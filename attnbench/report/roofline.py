"""The roofline table (each case's achieved FLOP/s as a percentage of the
matmul rate measured at the run's start) and the calibrations of one or two
runs side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.table import Table

from attnbench.analysis.baseline import describe_setting, label_order, settings_groups
from attnbench.analysis.roofline import best_rates, calibrations
from attnbench.analysis.verdict import PEAK_FRACTION_MAX
from attnbench.bench.calibration import format_rate
from attnbench.model import PASS_SHORT, REPORTED_PASSES, Status
from attnbench.report.build import RunReport


@dataclass(frozen=True)
class RooflineGroup:
    """The roofline of one setting: its caption, the N, the passes each cell
    shows, and per variant and head count the cells, each pass's fraction of
    the peak (None where not measured) and whether it is above the measured
    peak (impossible)."""

    setting: dict
    caption: str
    ns: list[int]
    passes: list[str]
    rows: list[tuple[str, int, list[list[tuple[float | None, bool]]]]]

    @staticmethod
    def cell_text(parts: list[tuple[float | None, bool]]) -> str:
        """``35% / 41%``: each pass's percentage (``!`` above the peak, ``-`` not measured)."""
        return " / ".join("-" if f is None else f"{100 * f:.0f}%" + ("!" if impossible else "")
                          for f, impossible in parts)


def roofline_groups(report: RunReport) -> list[RooflineGroup]:
    """Per setting with a calibration: rows variant × heads, columns N, cells
    the achieved FLOP/s as a fraction of the measured matmul peak (forward /
    forward+backward)."""
    if report.frame.empty or not report.calibrations:
        return []
    peaks = report.calibrations
    groups = []
    for setting, group in settings_groups(report.roofline):
        cal = peaks.get((setting["device"], setting["dtype"]))
        if cal is None or group["peak_fraction"].isna().all():
            continue
        # past the best rate the run's calibrations showed a figure is impossible
        ceiling = PEAK_FRACTION_MAX * best_rates(report.meta)[(setting["device"], setting["dtype"])] \
            / cal["matmul_flops"]
        shown = [p for p in REPORTED_PASSES if p in set(group["pass"])]
        ns = sorted(set(group["seq_len"]))
        balance = cal["matmul_flops"] / cal["bandwidth_bytes_per_s"]
        caption = (f"peak {format_rate('matmul_flops', cal['matmul_flops'])} (n={cal.get('matmul_n')} "
                   f"matmul), copy bandwidth {format_rate('bw', cal['bandwidth_bytes_per_s'])}: a "
                   f"layer needs over {balance:.0f} FLOPs per byte moved to reach the peak; "
                   f"cells {' / '.join(PASS_SHORT[p] for p in shown)}"
                   + ("; ! above the measured peak: impossible, the machine changed under the run "
                      "(see the verdict)" if (group["peak_fraction"] > ceiling).any() else ""))
        lookup = {(r["label"], r["heads"], r["seq_len"], r["pass"]): r for r in group.to_dict("records")}
        rows = []
        for label in label_order(group):
            for heads in sorted(set(group[group["label"] == label]["heads"])):
                cells = []
                for n in ns:
                    parts = []
                    for p in shown:
                        r = lookup.get((label, heads, n, p))
                        ok = r is not None and r["status"] == Status.OK and not pd.isna(r["peak_fraction"])
                        parts.append((float(r["peak_fraction"]), bool(r["peak_fraction"] > ceiling)) if ok
                                     else (None, False))
                    cells.append(parts)
                rows.append((label, int(heads), cells))
        groups.append(RooflineGroup(setting, caption, ns, shown, rows))
    return groups


def roofline_tables(report: RunReport) -> list[Table]:
    """The roofline groups (``roofline_groups``) as rich tables."""
    tables = []
    for group in roofline_groups(report):
        table = Table(title=f"roofline: achieved FLOP/s as % of the measured matmul peak — "
                            f"{describe_setting(group.setting)}", caption=group.caption)
        table.add_column("variant", no_wrap=True, style="bold")
        table.add_column("heads", justify="right")
        for n in group.ns:
            table.add_column(f"N={n}", justify="right")
        for label, heads, cells in group.rows:
            table.add_row(label, str(heads), *[group.cell_text(parts) for parts in cells])
        tables.append(table)
    return tables


CALIBRATION_COLUMNS = ("run", "device", "matmul start", "matmul end", "bandwidth start", "bandwidth end")


def calibration_rows(metas: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """The calibrations of one or more runs, in CALIBRATION_COLUMNS: per run and
    device, the matmul rate and copy bandwidth at the start and the end."""
    rows = []
    for name, meta in metas:
        starts, ends = calibrations(meta), calibrations(meta, "end")
        for (device, dtype), start in starts.items():
            end = ends.get((device, dtype), {})
            rows.append([name, f"{device} {dtype}", format_rate("matmul_flops", start.get("matmul_flops")),
                         format_rate("matmul_flops", end.get("matmul_flops")),
                         format_rate("bw", start.get("bandwidth_bytes_per_s")),
                         format_rate("bw", end.get("bandwidth_bytes_per_s"))])
    return rows


def calibration_table(metas: list[tuple[str, dict[str, Any]]]) -> Table | None:
    """The calibrations of one or more runs side by side (``calibration_rows``)."""
    rows = calibration_rows(metas)
    if not rows:
        return None
    table = Table(title="calibration: the machine at the start and the end of each run")
    for col in CALIBRATION_COLUMNS:
        table.add_column(col, justify="left" if col in ("run", "device") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table

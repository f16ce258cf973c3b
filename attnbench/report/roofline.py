"""A run's figures against the machine's limits: each case's achieved FLOP/s as
a fraction of the matrix-multiply rate measured at the run's start (a roofline
view: a layer far below the peak at large N is bound by memory traffic or
overheads, not arithmetic), the calibrations of one or two runs side by side,
and the warnings a run's calibrations and noise record raise."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.table import Table

from attnbench.analysis.baseline import describe_setting, label_order, settings_groups
from attnbench.bench.calibration import calibration_drift, format_rate
from attnbench.bench.noise import noise_warnings
from attnbench.model import REPORTED_PASSES, Status

PASS_SHORT = {"forward": "fwd", "backward": "bwd", "forward_backward": "f+b"}


def calibrations(meta: dict[str, Any], when: str = "start") -> dict[tuple[str, str], dict[str, Any]]:
    """(device, dtype) -> the run's calibration at its ``start`` or ``end``."""
    found = (meta.get("calibration") or {}).get(when) or []
    return {(c.get("device"), c.get("dtype")): c for c in found if isinstance(c, dict) and not c.get("error")}


def with_peak_fraction(frame: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """Add ``peak_fraction``: achieved FLOP/s (FLOPs over the median time) over
    the matmul rate measured at the run's start on the case's device and dtype."""
    out = frame.copy()
    peaks = calibrations(meta)
    rates = [peaks.get((d, t), {}).get("matmul_flops") for d, t in zip(out["device"], out["dtype"], strict=True)]
    achieved = pd.to_numeric(out["tflops"], errors="coerce") * 1e12
    out["peak_fraction"] = [a / r if r and not pd.isna(a) else math.nan
                            for a, r in zip(achieved, rates, strict=True)]
    return out


def roofline_tables(frame: pd.DataFrame, meta: dict[str, Any]) -> list[Table]:
    """Per setting: rows variant × heads, columns N, cells the achieved FLOP/s
    as a percentage of the measured matmul peak (forward / forward+backward)."""
    if frame.empty or not calibrations(meta):
        return []
    data = with_peak_fraction(frame, meta)
    peaks = calibrations(meta)
    tables = []
    for setting, group in settings_groups(data):
        cal = peaks.get((setting["device"], setting["dtype"]))
        if cal is None or group["peak_fraction"].isna().all():
            continue
        shown = [p for p in REPORTED_PASSES if p in set(group["pass"])]
        ns = sorted(set(group["seq_len"]))
        balance = cal["matmul_flops"] / cal["bandwidth_bytes_per_s"]
        table = Table(title=f"roofline: achieved FLOP/s as % of the measured matmul peak — "
                            f"{describe_setting(setting)}",
                      caption=f"peak {format_rate('matmul_flops', cal['matmul_flops'])} (n={cal.get('matmul_n')} "
                              f"matmul), copy bandwidth {format_rate('bw', cal['bandwidth_bytes_per_s'])}: a "
                              f"layer needs over {balance:.0f} FLOPs per byte moved to reach the peak; "
                              f"cells {' / '.join(PASS_SHORT[p] for p in shown)}")
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
                        parts.append(f"{100 * r['peak_fraction']:.0f}%" if ok else "-")
                    cells.append(" / ".join(parts))
                table.add_row(label, str(heads), *cells)
        tables.append(table)
    return tables


def run_notes(meta: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Warnings from the run's calibrations (drift between start and end) and
    its noise record, as printable lines."""
    lines = []
    ends = calibrations(meta, "end")
    for key, start in calibrations(meta).items():
        lines += calibration_drift(start, ends.get(key))
    if meta.get("noise"):
        threads = max((r.get("threads") or 0 for r in records), default=0) or None
        environment = meta.get("environment") or {}
        usable = environment.get("cpu_affinity") or environment.get("cpu_cores_logical")
        lines += noise_warnings(meta["noise"], threads, usable)
    return [f"[yellow]warning:[/] {line}" for line in lines]


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

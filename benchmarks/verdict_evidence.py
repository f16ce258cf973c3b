"""The figures the verdict's thresholds come from, for any set of runs: per
run, other processes' share of the cores, the median round spread, and how
far each calibration figure moved between the run's start and end; then the
same summarised for the quiet runs (other processes under ``--quiet-share``)
and the busy ones (over ``--busy-share``), and what the verdict said.

    python benchmarks/verdict_evidence.py results/reference-cpu/*/ /tmp/runs/*/
    python benchmarks/verdict_evidence.py DIR... --min-wall 50   # whole suites, not test fixtures

A directory is a run (it has run.json) or holds runs; a run seen twice (the
same run id) counts once. The thresholds themselves live in
attnbench/analysis/verdict.py; docs/statistics.md ("The verdict") has the
table these figures gave.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from attnbench.analysis.roofline import calibrations
from attnbench.analysis.verdict import median_round_spread
from attnbench.bench.calibration import FIELDS, drift
from attnbench.report.build import build_report
from attnbench.store.results import load_run


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories under ``paths`` (each path a run or a folder of runs, searched deep)."""
    found: list[Path] = []
    for path in paths:
        found += [path] if (path / "run.json").exists() else sorted(p.parent for p in path.rglob("run.json"))
    return found


def evidence(run_dir: Path) -> dict[str, Any] | None:
    """One run's figures; None when it recorded no noise or no calibration pair."""
    run = load_run(run_dir)
    meta = run.meta
    noise = meta.get("noise") or {}
    starts, ends = calibrations(meta), calibrations(meta, "end")
    moves = {label: drift(start.get(name), (ends.get(key) or {}).get(name))
             for key, start in starts.items() for name, label in FIELDS.items()}
    moves = {k: v for k, v in moves.items() if v is not None}
    if noise.get("other_share") is None or not moves:
        return None
    return {"run_id": meta.get("run_id"), "suite": meta.get("suite_name"), "wall_s": noise.get("wall_s"),
            "share": noise["other_share"], "spread": median_round_spread(run.frame()),
            "moved": max(moves.values()), "moves": moves, "verdict": build_report(run).verdict.level}


def _range(values: list[float], pct: bool = True) -> str:
    if not values:
        return "–"
    show = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.2f}")
    return f"{show(min(values))}–{show(max(values))} (median {show(statistics.median(values))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--quiet-share", type=float, default=0.03)
    parser.add_argument("--busy-share", type=float, default=0.25)
    parser.add_argument("--min-wall", type=float, default=0.0, help="only runs that took this many seconds")
    args = parser.parse_args(argv)
    rows: dict[str, dict[str, Any]] = {}
    for run_dir in run_dirs(args.paths):
        try:
            row = evidence(run_dir)
        except Exception as exc:  # noqa: BLE001 - a folder that is not a readable run is skipped, said
            print(f"skipped {run_dir}: {exc}", file=sys.stderr)
            continue
        if row and (row["wall_s"] or 0) >= args.min_wall:
            rows.setdefault(row["run_id"], row)
    if not rows:
        print("no run with a noise record and two calibrations", file=sys.stderr)
        return 2
    print("| run | wall s | other share | median round spread | calibration moved (most) | verdict |")
    print("|---|---:|---:|---:|---:|---|")
    for r in sorted(rows.values(), key=lambda r: (r["share"], r["run_id"])):
        spread = "–" if r["spread"] is None else f"{r['spread']:.3f}"
        print(f"| {r['run_id']} | {r['wall_s'] or 0:.0f} | {r['share']:.1%} | {spread} | {r['moved']:.0%} "
              f"| {r['verdict']} |")
    for name, group in (("quiet", [r for r in rows.values() if r["share"] < args.quiet_share]),
                        ("busy", [r for r in rows.values() if r["share"] > args.busy_share])):
        spreads = [r["spread"] for r in group if r["spread"] is not None]
        beyond = sum(r["moved"] > 0.2 for r in group)
        print(f"{name}: {len(group)} runs; other share {_range([r['share'] for r in group])}; round spread "
              f"{_range(spreads, pct=False)}; calibration moved {_range([r['moved'] for r in group])}, "
              f"{beyond} beyond 20%; verdicts "
              + ", ".join(f"{v} {sum(r['verdict'] == v for r in group)}"
                          for v in dict.fromkeys(r["verdict"] for r in group)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

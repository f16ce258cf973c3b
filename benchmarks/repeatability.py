"""Do attnbench's figures repeat? Runs a suite twice back to back, per pair,
through the command line into a temporary directory, and prints per pair:

* the fraction of cases ``attnbench compare A B`` flags as changed (of those
  it could judge; an A/A pair should flag at most 5%);
* the median and 90th percentile of |log ratio| of the case medians B/A
  (shown as percentages);
* the same for the speed-ups against the baseline (``compare RUN --json``),
  and their signed median: speed-ups that all moved one way say the baseline
  itself moved between the runs, against every variant;
* each run's wall time, and its start/end calibration where it has one;

then the same over all pairs. ``--planted-slowdown`` adds a variant to the
suite (``benchmarks/planted.py``: a built-in layer that computes 15% longer in
run B than in run A) and reports the fraction of its cases flagged slower
(the detection rate) and of the other cases flagged at all.

It reads only what the command line writes (``compare --json`` and
``run.json``), so it measures any version of attnbench: ``--repo DIR`` runs
the attnbench of another checkout (the command line runs in DIR, whose
package comes first on the path), e.g. the code before a change.

usage: python benchmarks/repeatability.py SUITE [--pairs 3] [--quick] [--repo DIR]
           [--planted-slowdown [0.15]] [--planted-base linformer] [--keep DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent  # benchmarks.planted is found here
CLI = [sys.executable, "-c", "from attnbench.cli.app import app; app(prog_name='attnbench')"]
REPO = [ROOT]  # where the command line runs: its attnbench is the one measured (--repo)
PLANTED = "benchmarks.planted:PlantedSlowdown"
PLANTED_LABEL = "planted"
KEYS = ("label", "batch", "dim", "dtype", "device", "causal", "heads", "seq_len", "pass")


def attnbench(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([*CLI, *args], cwd=REPO[0], env=env, capture_output=True, text=True)
    if check and done.returncode not in (0, 1, 3):  # 1: compare found a regression; 3: some cases failed
        sys.exit(f"attnbench {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def planted_suite(suite: Path, out: Path, extra: float, base: str) -> Path:
    """The suite with the planted variant added (``extra``: its slowdown)."""
    raw = yaml.safe_load(suite.read_text())
    raw.setdefault("variants", []).append({"name": PLANTED, "label": PLANTED_LABEL,
                                           "params": {"base": base, "extra": extra}})
    path = out / f"{suite.stem}-planted-{extra:g}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(suite: Path, out: Path, quick: bool) -> tuple[Path, float]:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    t0 = time.perf_counter()
    attnbench("run", str(suite), "--out", str(out), "-q", *(["--quick"] if quick else []))
    wall = time.perf_counter() - t0
    made = [p for p in out.iterdir() if p not in before and p.is_dir()]
    if len(made) != 1:
        sys.exit(f"expected one new run directory in {out}, found {len(made)}")
    return made[0], wall


def _quantiles(values: list[float]) -> tuple[float, float]:
    """(median, 90th percentile) of |values| in percent."""
    if not values:
        return math.nan, math.nan
    magnitudes = sorted(abs(v) * 100 for v in values)
    p90 = magnitudes[min(len(magnitudes) - 1, math.ceil(0.9 * len(magnitudes)) - 1)]
    return statistics.median(magnitudes), p90


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in KEYS)


def speedups(run_dir: Path) -> dict[tuple, float]:
    payload = json.loads(attnbench("compare", str(run_dir), "--json").stdout)
    return {_key(r): float(r["speedup"]) for r in payload["rows"]
            if r.get("label") != payload["baseline"] and r.get("speedup") not in (None, "")
            and not math.isnan(float(r["speedup"]))}


def calibration(run_dir: Path) -> str:
    meta = json.loads((run_dir / "run.json").read_text())
    cal = meta.get("calibration") or {}
    start, end = (cal.get("start") or [{}])[0], (cal.get("end") or [{}])[0]  # the first device and dtype
    if not start.get("matmul_flops") or not end.get("matmul_flops"):
        return ""
    mm = end["matmul_flops"] / start["matmul_flops"] - 1
    bw = end["bandwidth_bytes_per_s"] / start["bandwidth_bytes_per_s"] - 1
    return f"calibration end/start: matmul {mm:+.1%}, bandwidth {bw:+.1%}"


def measure_pair(suite_a: Path, suite_b: Path, out: Path, quick: bool) -> dict[str, Any]:
    run_a, wall_a = run(suite_a, out / "a", quick)
    run_b, wall_b = run(suite_b, out / "b", quick)
    compared = json.loads(attnbench("compare", str(run_a), str(run_b), "--json").stdout)
    rows = [r for r in compared["rows"] if r.get("mark") != "x"]
    judged = [r for r in rows if r.get("verdict", "") != "too few rounds"]
    # The A/A figures leave the planted variant out: it is meant to change.
    logs = [math.log(r["median_b_ms"] / r["median_a_ms"]) for r in rows
            if r.get("median_a_ms") and r.get("median_b_ms") and r.get("label") != PLANTED_LABEL]
    sa, sb = speedups(run_a), speedups(run_b)
    speed_logs = [math.log(sb[k] / sa[k]) for k in sa.keys() & sb.keys()
                  if sa[k] > 0 and sb[k] > 0 and k[0] != PLANTED_LABEL]
    planted = [r for r in judged if r.get("label") == PLANTED_LABEL]
    others = [r for r in judged if r.get("label") != PLANTED_LABEL]
    return {
        "runs": [str(run_a), str(run_b)], "wall_s": [wall_a, wall_b], "cases": len(rows), "judged": len(judged),
        "flagged": sum(bool(r.get("significant")) for r in others), "others": len(others),
        "planted": len(planted), "planted_slower": sum(r.get("mark") == "+" for r in planted),
        "planted_ratio": statistics.median([r["ratio"] for r in planted]) if planted else math.nan,
        "case_change": _quantiles(logs), "speedup_change": _quantiles(speed_logs),
        # Signed: speed-ups that moved together say the baseline moved against every variant.
        "speedup_together": statistics.median(speed_logs) * 100 if speed_logs else math.nan,
        "shift": compared.get("shift"), "calibration": [calibration(run_a), calibration(run_b)],
    }


def describe(result: dict[str, Any], planted: bool) -> list[str]:
    c50, c90 = result["case_change"]
    s50, s90 = result["speedup_change"]
    lines = [f"  compare flags {result['flagged']} of {result['others']} cases "
             f"({result['flagged'] / max(result['others'], 1):.1%}); {result['cases'] - result['judged']} "
             "without a verdict (too few rounds)",
             f"  |change| of case medians: median {c50:.1f}%, 90th percentile {c90:.1f}%",
             f"  |change| of speed-ups against the baseline: median {s50:.1f}%, 90th percentile {s90:.1f}%; "
             f"together {result['speedup_together']:+.1f}% (their signed median: the baseline's own move)",
             f"  wall time: {result['wall_s'][0]:.1f} s, {result['wall_s'][1]:.1f} s"]
    if planted:
        lines.append(f"  planted slowdown: {result['planted_slower']} of {result['planted']} cases flagged slower "
                     f"({result['planted_slower'] / max(result['planted'], 1):.1%}); median ratio "
                     f"{result['planted_ratio']:.3f}")
    shift = result.get("shift")
    if isinstance(shift, dict) and shift.get("ratio"):
        lines.append(f"  common shift B/A: {shift['ratio']:.3f} [{shift['low']:.3f}–{shift['high']:.3f}]")
    lines += [f"  run {'AB'[i]}: {text}" for i, text in enumerate(result["calibration"]) if text]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", type=Path)
    parser.add_argument("--pairs", type=int, default=3, help="A/A (or A/B) pairs of runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="run the suite with --quick")
    parser.add_argument("--planted-slowdown", type=float, nargs="?", const=0.15, default=None, metavar="FRACTION",
                        help="add a variant that is FRACTION slower in run B (default 0.15)")
    parser.add_argument("--planted-base", default="linformer", help="the built-in variant slowed (default linformer)")
    parser.add_argument("--repo", type=Path, default=ROOT,
                        help="the checkout whose attnbench runs (default: this one)")
    parser.add_argument("--keep", type=Path, help="keep the runs in this directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if not (args.repo / "attnbench" / "__init__.py").is_file():
        parser.error(f"--repo {args.repo}: no attnbench package there")
    REPO[0] = args.repo.resolve()
    out = args.keep or Path(tempfile.mkdtemp(prefix="attnbench-repeatability-"))
    out.mkdir(parents=True, exist_ok=True)
    suite = args.suite.resolve()
    planted = args.planted_slowdown is not None
    suite_a = planted_suite(suite, out, 0.0, args.planted_base) if planted else suite
    suite_b = planted_suite(suite, out, args.planted_slowdown, args.planted_base) if planted else suite
    results = []
    for i in range(args.pairs):
        print(f"pair {i + 1} of {args.pairs}: running {suite.name} twice ...", file=sys.stderr, flush=True)
        result = measure_pair(suite_a, suite_b, out / f"pair{i + 1}", args.quick)
        results.append(result)
        print(f"pair {i + 1}:", *describe(result, planted), sep="\n", flush=True)
    flagged = sum(r["flagged"] for r in results)
    others = sum(r["others"] for r in results)
    print(f"all {args.pairs} pairs:")
    print(f"  compare flags {flagged} of {others} cases ({flagged / max(others, 1):.1%}); per pair "
          + ", ".join(f"{r['flagged'] / max(r['others'], 1):.1%}" for r in results))
    for key, what in (("case_change", "case medians"), ("speedup_change", "speed-ups")):
        print(f"  |change| of {what}: median per pair "
              + ", ".join(f"{r[key][0]:.1f}%" for r in results) + "; 90th percentile per pair "
              + ", ".join(f"{r[key][1]:.1f}%" for r in results))
    print("  speed-ups moved together (signed median) per pair "
          + ", ".join(f"{r['speedup_together']:+.1f}%" for r in results))
    walls = [w for r in results for w in r["wall_s"]]
    print(f"  wall time per run: median {statistics.median(walls):.1f} s, max {max(walls):.1f} s")
    if planted:
        found = sum(r["planted_slower"] for r in results)
        total = sum(r["planted"] for r in results)
        print(f"  planted {args.planted_slowdown:.0%} slowdown: {found} of {total} cases flagged slower "
              f"({found / max(total, 1):.1%})")
    print(f"  runs kept in {out}" if args.keep else f"  runs in {out} (temporary)")
    if args.json:
        args.json.write_text(json.dumps({"suite": str(suite), "pairs": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

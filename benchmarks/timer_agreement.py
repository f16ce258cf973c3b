"""Does attnbench time a layer as torch.utils.benchmark does? Each forward case
of a suite, timed by attnbench (a run of the suite) and by
``torch.utils.benchmark.Timer.blocked_autorange`` on the same layer, shape,
dtype and thread count, under both CPU allocators (``timing.allocator``:
steady and default): the two timers must agree within 10% under the same
allocator. Across allocators they need not: glibc's default maps every
tensor over 32 MiB afresh (see docs/measurement.md, "The CPU allocator").

    python benchmarks/timer_agreement.py suites/quick.yaml             # runs attnbench twice, then the Timer
    python benchmarks/timer_agreement.py suites/quick.yaml --runs STEADY_RUN DEFAULT_RUN
    python benchmarks/timer_agreement.py suites/quick.yaml --no-turns  # each case's samples back to back

In turns (attnbench's default) a variant's call follows its peers' calls, so
it starts with the caches they left; the Timer repeats one layer back to back.
Small layers, whose data fit in the caches, pay for that in turns: compare
with --no-turns to see the two timers on the same footing.

Each allocator's Timer measurements run in a process of their own (glibc's
thresholds, once fixed, stay fixed). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ALLOCATORS = ("steady", "default")
TOLERANCE = 0.10
CLI = [sys.executable, "-c", "from attnbench.cli.entry import main; main()"]


def forward_cases(run_dir: Path) -> list[dict]:
    """(label, variant, params, batch, N, heads, dim, dtype, causal, threads, median ms) of each forward case."""
    from attnbench.store.results import load_run

    run = load_run(run_dir)
    frame = run.frame()
    rows = frame[(frame["pass"] == "forward") & (frame["status"] == "ok")]
    return [{"label": r.label, "variant": r.variant, "params": json.loads(r.params) if isinstance(r.params, str)
             else (r.params or {}), "batch": int(r.batch), "seq_len": int(r.seq_len), "heads": int(r.heads),
             "dim": int(r.dim), "dtype": r.dtype, "causal": bool(r.causal), "threads": int(r.threads),
             "attnbench_ms": float(r.median_ms)} for r in rows.itertuples()]


def measure(cases: list[dict], allocator: str, min_run_time: float) -> list[float]:
    """torch.utils.benchmark's median (ms) of each case's forward, in this process."""
    import os

    os.environ["ATTNBENCH_MALLOC"] = allocator
    from attnbench.bench.worker.setup import steady_malloc

    steady_malloc()  # as a worker does (a no-op for "default")
    import torch
    import torch.utils.benchmark as benchmark

    import attnbench

    out = []
    for case in cases:
        torch.manual_seed(0)
        dtype = getattr(torch, case["dtype"])
        layer = attnbench.build(case["variant"], dim=case["dim"], heads=case["heads"], seq_len=case["seq_len"],
                                causal=case["causal"], **case["params"]).to(dtype).eval()
        x = torch.randn(case["batch"], case["seq_len"], case["dim"], dtype=dtype)
        timer = benchmark.Timer("with torch.inference_mode(): layer(x)", globals={"torch": torch, "layer": layer,
                                                                                  "x": x},
                                num_threads=case["threads"])
        out.append(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    return out


def run_attnbench(suite: Path, allocator: str, out_dir: Path, turns: bool = True) -> Path:
    """A run of ``suite`` with ``timing.allocator`` set, forward only; its directory.
    ``turns`` False: each case's samples back to back (``timing.interleave: false``),
    as the Timer takes them, instead of in turns with the other variants."""
    raw = yaml.safe_load(suite.read_text())
    raw.setdefault("timing", {})["allocator"] = allocator
    raw["timing"]["interleave"] = turns
    raw.setdefault("defaults", {})["passes"] = ["forward"]
    raw["name"] = f"{raw['name']}-{allocator}"
    path = out_dir / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    subprocess.run([*CLI, "run", str(path), "--out", str(out_dir), "-q"], check=True, stdout=subprocess.DEVNULL)
    return max((d for d in out_dir.iterdir() if d.is_dir() and d.name.endswith(raw["name"])),
               key=lambda d: d.stat().st_mtime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("STEADY_RUN", "DEFAULT_RUN"),
                        help="attnbench runs of the suite under each allocator (default: run them now)")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per Timer measurement")
    parser.add_argument("--no-turns", action="store_true", help="attnbench samples each case back to back "
                        "(timing.interleave: false), as the Timer does, instead of in turns with its peers")
    parser.add_argument("--measure", choices=ALLOCATORS, help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--cases", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        cases = json.loads(args.cases.read_text())
        print(json.dumps(measure(cases, args.measure, args.min_run_time)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or [run_attnbench(args.suite, a, Path(tmp), turns=not args.no_turns) for a in ALLOCATORS]
        table, worst = [], 0.0
        for allocator, run_dir in zip(ALLOCATORS, runs, strict=True):
            cases = forward_cases(run_dir)
            spec = Path(tmp) / f"cases-{allocator}.json"
            spec.write_text(json.dumps(cases))
            child = subprocess.run([sys.executable, __file__, str(args.suite), "--measure", allocator, "--cases",
                                    str(spec), "--min-run-time", str(args.min_run_time)],
                                   check=True, capture_output=True, text=True)
            for case, timer_ms in zip(cases, json.loads(child.stdout), strict=True):
                ratio = case["attnbench_ms"] / timer_ms
                worst = max(worst, abs(ratio - 1))
                table.append((allocator, case["label"], case["seq_len"], case["heads"], case["attnbench_ms"],
                              timer_ms, ratio))
    print("| allocator | variant | N | heads | attnbench ms | torch.utils.benchmark ms | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for allocator, label, n, heads, ours, theirs, ratio in table:
        flag = "" if abs(ratio - 1) <= TOLERANCE else " **"
        print(f"| {allocator} | {label} | {n} | {heads} | {ours:.2f} | {theirs:.2f} | {ratio:.3f}{flag} |")
    ratios = [r for *_, r in table]
    print(f"\nworst disagreement: {worst:.1%} (tolerance {TOLERANCE:.0%}); median ratio "
          f"{statistics.median(ratios):.3f} over {len(ratios)} cases")
    for allocator in ALLOCATORS:
        softmax = [(r[1], r[2], r[3], r[5]) for r in table if r[0] == allocator and r[1] == "softmax"]
        if softmax:
            print(f"softmax under {allocator}: " + ", ".join(f"N={n} H={h} {ms:.1f} ms" for _, n, h, ms in softmax))
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())

"""Does attnbench time a layer as torch.utils.benchmark does? Every CPU
forward case of a suite, timed by both timers on the same layer, input and
thread count, under both CPU allocators (``timing.allocator``: steady and
default); the two must agree within 10% under the same allocator. Across
allocators they need not: glibc's default maps every tensor over 32 MiB
afresh (see docs/measurement.md, "The CPU allocator").

    python benchmarks/timer_agreement.py suites/quick.yaml                  # the check (both timers interleaved)
    python benchmarks/timer_agreement.py suites/quick.yaml --match softmax --limit 4 --rounds 3
    python benchmarks/timer_agreement.py suites/quick.yaml --out agreement.csv   # or .json
    python benchmarks/timer_agreement.py suites/quick.yaml --sweep [--no-turns]  # a run of the suite instead
    python benchmarks/timer_agreement.py suites/quick.yaml --runs STEADY_RUN DEFAULT_RUN

The check (the default) compares the two timers, not two moments. Each
allocator gets a process of its own (glibc's thresholds, once fixed, stay
fixed), set up as attnbench's worker sets itself up (``ATTNBENCH_MALLOC``,
``steady_malloc``, its CPU share and thread count, the preloaded modules,
``gc.freeze``). There each case's layer and input are built as the worker
builds them (``start_case``, ``pass_functions``, then one untimed call, as
the worker's memory run), and the two timers take turns on that same layer
for ``--rounds`` rounds, in the order A B, then B A, and so on. A is
attnbench's timing engine (``timing.sample`` with the suite's timing
settings: one visit, its median); B is ``torch.utils.benchmark.Timer("with
torch.inference_mode(): layer(x)").blocked_autorange(min_run_time)`` on
torch's thread count, its median. Per case: the median over rounds of each
timer (attnbench's own figure is the median of its visit medians too), their
ratio (the median of the per-round ratios: paired within rounds, as
attnbench's speed-ups are), the range of the per-round ratios, and each
timer's round spread (the
standard deviation of the log round medians, as attnbench's
``round_spread``). A case whose ratio is off by more than 10%, or that could
not be built, fails the check: the exit status is 1. Where either timer's
round spread is over 5% a disagreement is marked ``noisy``: the machine
moved too much between rounds to tell it from noise. A noisy disagreement is
measured again, ``--retry-rounds`` more rounds (twice ``--rounds``) in a
fresh process, and judged on all its rounds (marked ``measured again``): a
difference between the timers persists, one the machine made does not. Each
timer's minor page faults per call are counted too; where they differ, the
two timers' calls did different work (glibc's default malloc, whose
thresholds move with what was freed before), and a disagreement says so.

``--sweep`` answers another question: what the sweep's protocol costs. It
runs the suite (forward only) through the command line under each allocator,
or reads ``--runs``, and holds each case's figure against the Timer's median
over ``--rounds`` measurements on the worker-built layer, taken afterwards.
In turns (attnbench's default) a variant's call follows its peers' calls, so
it starts with the caches they left, while the Timer repeats one layer back
to back; with ``--no-turns`` the run takes each case's samples back to back.
The two timings are taken minutes apart, so on a shared machine single cases
also differ by the machine's drift. This mode reports and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ALLOCATORS = ("steady", "default")
TOLERANCE = 0.10  # the check: |attnbench / Timer - 1| at most this, per case
NOISY_SPREAD = 0.05  # a round spread over this: a 10% disagreement cannot be told from noise
# Minor page faults per call further apart than this (relative): the two timers' calls did different
# work, as glibc's default malloc does when what was freed before differs.
FAULTS_APART = 0.10
FAULTS_FLOOR = 100  # per call: 400 KiB of fresh pages, ~0.1 ms; fewer cannot move a case by 10%
CLI = [sys.executable, "-c", "from attnbench.cli.entry import main; main()"]
TIMER_STMT = "with torch.inference_mode(): layer(x)\ncalls[0] += 1"  # the count: faults per call
COLUMNS = ("case", "allocator", "attnbench_ms", "timer_ms", "ratio", "ratio_lo", "ratio_hi", "attnbench_spread",
           "timer_spread", "attnbench_faults", "timer_faults", "rounds", "retried", "threads", "verdict")


# --- pure helpers --------------------------------------------------------------------------------


def round_order(r: int) -> tuple[str, str]:
    """Which timer goes first in round ``r``: attnbench in even rounds, the Timer in odd ones."""
    return ("attnbench", "timer") if r % 2 == 0 else ("timer", "attnbench")


def log_spread(values: list[float]) -> float | None:
    """The standard deviation of the logs (about the relative spread); None with fewer than two."""
    logs = [math.log(v) for v in values if v > 0]
    return statistics.stdev(logs) if len(logs) > 1 else None


def faults_apart(faults: list[float | None], apart: float = FAULTS_APART) -> bool:
    """Whether the two timers' calls paid page faults more than ``apart`` apart (relative to
    the larger) and by more than ``FAULTS_FLOOR`` a call."""
    if len(faults) != 2 or any(f is None for f in faults):
        return False
    low, high = sorted(faults)
    return high - low > max(apart * high, FAULTS_FLOOR)


def verdict(ratio: float, spreads: list[float | None], tolerance: float = TOLERANCE,
            noisy: float = NOISY_SPREAD, faults: list[float | None] | None = None) -> str:
    """``agree`` within the tolerance; else ``DISAGREE``, marked ``noisy`` when a
    timer's round spread is over ``noisy`` and ``page faults differ`` when the two
    timers' calls paid different numbers of page faults (``faults``: per call)."""
    if abs(ratio - 1) <= tolerance:
        return "agree"
    marks = (["noisy"] if any(s is not None and s > noisy for s in spreads) else []) + \
        (["page faults differ"] if faults and faults_apart(faults) else [])
    return "DISAGREE" + (f" ({', '.join(marks)})" if marks else "")


def agrees(row: dict[str, Any]) -> bool:
    """Whether a row passes the check (measured again or not)."""
    return str(row.get("verdict", "")).startswith("agree")


def retry_wanted(row: dict[str, Any]) -> bool:
    """A noisy disagreement, not yet measured again: the machine may have made it."""
    return str(row.get("verdict", "")).startswith("DISAGREE (noisy") and not row.get("retried")


def merged(first: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """One case's measurements from two processes as one: the rounds of both (each
    paired within its round), the page faults per call averaged over the two."""
    faults = [None if a is None or b is None else (a + b) / 2
              for a, b in zip(first.get("faults") or [None, None], again.get("faults") or [None, None],
                              strict=True)]
    return {"attnbench": first["attnbench"] + again["attnbench"], "timer": first["timer"] + again["timer"],
            "faults": faults, "threads": first["threads"]}


def summarize(attnbench_ms: list[float], timer_ms: list[float], tolerance: float = TOLERANCE,
              faults: list[float | None] | None = None) -> dict[str, Any]:
    """One case's figures from its round medians: each timer's median over rounds, their ratio
    (the median of the per-round ratios when both have as many rounds, else of the medians),
    the range of the per-round ratios, the round spreads; ``faults``: each timer's minor page
    faults per call, carried into the row and the verdict."""
    ours, theirs = statistics.median(attnbench_ms), statistics.median(timer_ms)
    paired = ([a / t for a, t in zip(attnbench_ms, timer_ms, strict=True)]
              if len(attnbench_ms) == len(timer_ms) > 1 else [])
    # Paired within rounds, as attnbench's speed-ups are: the two timers of one round ran seconds
    # apart, so what the machine did between rounds cancels in their ratio.
    ratio = statistics.median(paired) if paired else ours / theirs
    spreads = [log_spread(attnbench_ms), log_spread(timer_ms)]
    faults = faults or [None, None]
    return {"attnbench_ms": ours, "timer_ms": theirs, "ratio": ratio,
            "ratio_lo": min(paired) if paired else None, "ratio_hi": max(paired) if paired else None,
            "attnbench_spread": spreads[0], "timer_spread": spreads[1],
            "attnbench_faults": faults[0], "timer_faults": faults[1], "rounds": len(timer_ms),
            "verdict": verdict(ratio, spreads, tolerance, faults=faults),
            "attnbench_rounds_ms": list(attnbench_ms), "timer_rounds_ms": list(timer_ms)}


def case_name(case: dict[str, Any]) -> str:
    """``softmax N=1024 H=8`` (and the width, batch, dtype and causality where not the quick suite's)."""
    extra = "".join([f" dim={case['dim']}" if case["dim"] != 256 else "",
                     f" B={case['batch']}" if case["batch"] != 1 else "",
                     f" {case['dtype']}" if case["dtype"] != "float32" else "",
                     " causal" if case["causal"] else ""])
    return f"{case['label']} N={case['seq_len']} H={case['heads']}{extra}"


def select(cases: list[dict[str, Any]], match: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The cases (``name``, ``case_id``) whose name or case id matches the regular
    expression ``match``, the first ``limit`` of them."""
    if match:
        pattern = re.compile(match)
        cases = [c for c in cases if pattern.search(c["name"]) or pattern.search(c["case_id"])]
    return cases[:limit] if limit else cases


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of the rows."""
    lines = ["| case | allocator | attnbench ms | Timer ms | ratio | round ratios | attnbench spread "
             "| Timer spread | faults/call | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['case']} | {r['allocator']} | – | – | – | – | – | – | – | error: {r['error']} |")
            continue
        span = "–" if r["ratio_lo"] is None else f"{r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}"
        lines.append(f"| {r['case']} | {r['allocator']} | {r['attnbench_ms']:.2f} | {r['timer_ms']:.2f} "
                     f"| {r['ratio']:.3f} | {span} | {_pct(r['attnbench_spread'])} | {_pct(r['timer_spread'])} "
                     f"| {_count(r.get('attnbench_faults'))} / {_count(r.get('timer_faults'))} | {r['verdict']} |")
    return lines


def summary_lines(rows: list[dict[str, Any]], tolerance: float = TOLERANCE) -> list[str]:
    """Per allocator: the worst disagreement, the median ratio, how many cases
    disagree (and how many of those are noisy)."""
    out = []
    for allocator in dict.fromkeys(r["allocator"] for r in rows):
        mine = [r for r in rows if r["allocator"] == allocator and not r.get("error")]
        if not mine:
            continue
        worst = max(mine, key=lambda r: abs(r["ratio"] - 1))
        bad = [r for r in mine if not agrees(r)]
        noisy = sum(1 for r in bad if "noisy" in r["verdict"])
        again = sum(1 for r in mine if r.get("retried"))
        out.append(f"{allocator}: worst {worst['ratio'] - 1:+.1%} ({worst['case']}), median ratio "
                   f"{statistics.median(r['ratio'] for r in mine):.3f}, {len(bad)} of {len(mine)} cases beyond "
                   f"{tolerance:.0%}" + (f" ({noisy} of them noisy)" if bad else "")
                   + (f"; {again} measured again" if again else ""))
    return out


def write_out(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The rows as JSON (``.json``: with ``meta``) or CSV (anything else)."""
    if path.suffix == ".json":
        path.write_text(json.dumps({**meta, "cases": rows}, indent=1) + "\n")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# --- the measuring process (one per allocator) ---------------------------------------------------


def _worker_setup(allocator: str) -> str:
    """Set this process up as attnbench's worker sets itself up (``process._worker_entry``); what malloc got."""
    os.environ["ATTNBENCH_MALLOC"] = allocator
    import gc

    from attnbench.bench.worker.process import SERVER_PRELOAD, import_modules
    from attnbench.bench.worker.setup import die_with_parent, steady_malloc, take_cpu_share

    die_with_parent()
    take_cpu_share()
    applied = steady_malloc()
    import_modules(SERVER_PRELOAD)
    gc.freeze()
    return applied


def measure(cases: list[dict[str, Any]], allocator: str, rounds: int, min_run_time: float,
            timer_only: bool = False) -> dict[str, Any]:
    """Each case's round medians (ms) of both timers, in turns on one worker-built layer
    (only the Timer's with ``timer_only``), in this process."""
    applied = _worker_setup(allocator)
    import torch
    import torch.utils.benchmark as benchmark

    from attnbench.bench.worker import timing
    from attnbench.bench.worker.measure import pass_functions, release, start_case
    from attnbench.bench.worker.messages import Failure
    from attnbench.model import Case

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    out = []
    for n, spec in enumerate(cases, 1):
        case = Case.from_dict(spec["case"])
        messages: list[Any] = []
        built = start_case(case, messages.append)
        if built is None:
            failure = next((m for m in messages if isinstance(m, Failure)), None)
            out.append({"error": failure.error if failure else "could not build"})
            continue
        threads = torch.get_num_threads()
        with torch.enable_grad():  # as the worker calls it; the forward runs under inference_mode
            memory_region, sample_once = pass_functions(built, "forward")
        memory_region()  # untimed, as the worker's memory run on a case's first visit
        calls = {"attnbench": [0], "timer": [0]}  # counted to give the minor page faults per call
        timer = benchmark.Timer(TIMER_STMT, num_threads=threads,
                                globals={"torch": torch, "layer": built.layer, "x": built.x, "calls": calls["timer"]})

        def counted(inner=sample_once, count=calls["attnbench"]):  # bound now: B023, a closure in a loop
            count[0] += 1
            return inner()

        medians: dict[str, list[float]] = {"attnbench": [], "timer": []}
        paid = {"attnbench": 0, "timer": 0}
        for r in range(rounds):
            for which in round_order(r):
                before = faults()
                if which == "timer":
                    medians["timer"].append(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)
                elif not timer_only:
                    medians["attnbench"].append(statistics.median(timing.sample(counted, case.timing)))
                paid[which] += faults() - before
        per_call = {k: paid[k] / calls[k][0] if calls[k][0] else None for k in paid}
        memory_region = sample_once = timer = counted = None
        release(built)
        built = None
        out.append({**medians, "faults": [per_call["attnbench"], per_call["timer"]], "threads": threads})
        ours = f"{statistics.median(medians['attnbench']):.2f} ms, " if medians["attnbench"] else ""
        print(f"  [{allocator}] {n}/{len(cases)} {spec['name']}: {ours}Timer "
              f"{statistics.median(medians['timer']):.2f} ms", file=sys.stderr, flush=True)
    return {"malloc": applied, "cases": out}


def measure_in_child(cases: list[dict[str, Any]], allocator: str, args: argparse.Namespace, tmp: Path,
                     timer_only: bool = False, rounds: int | None = None) -> dict[str, Any]:
    """``measure`` in a process of its own, under ``allocator`` (``rounds``: instead of ``--rounds``)."""
    spec, result = tmp / f"cases-{allocator}.json", tmp / f"result-{allocator}.json"
    spec.write_text(json.dumps(cases))
    command = [sys.executable, __file__, str(args.suite), "--measure", allocator, "--cases", str(spec),
               "--result", str(result), "--rounds", str(rounds or args.rounds),
               "--min-run-time", str(args.min_run_time)]
    subprocess.run(command + (["--timer-only"] if timer_only else []), check=True, cwd=ROOT,
                   env={**os.environ, "ATTNBENCH_MALLOC": allocator})
    return json.loads(result.read_text())


# --- the sweep mode ------------------------------------------------------------------------------


def run_attnbench(suite: Path, allocator: str, out_dir: Path, turns: bool = True) -> Path:
    """A run of ``suite`` with ``timing.allocator`` set, forward only; its directory.
    ``turns`` False: each case's samples back to back (``timing.interleave: false``),
    as the Timer takes them, instead of in turns with the other variants."""
    import yaml

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


def sweep_figures(run_dir: Path) -> dict[str, tuple[float, float | None]]:
    """case id -> (median ms, round spread) of each forward case a run measured."""
    from attnbench.store.results import load_run

    frame = load_run(run_dir).frame()
    rows = frame[(frame["pass"] == "forward") & (frame["status"] == "ok")]
    return {r.case_id: (float(r.median_ms), None if r.round_spread is None or math.isnan(r.round_spread)
                        else float(r.round_spread)) for r in rows.itertuples()}


# --- main ----------------------------------------------------------------------------------------


def suite_cases(suite: Path) -> list[dict[str, Any]]:
    """The suite's CPU forward cases, as the worker gets them (forward only), with their names."""
    from attnbench.suite.load import load

    out = []
    for case in load(suite).cases():
        if "forward" not in case.passes or case.device != "cpu":
            continue
        d = case.to_dict()
        d["passes"] = ["forward"]
        out.append({"case": d, "case_id": case.case_id, "name": case_name(d)})
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (default 5)")
    parser.add_argument("--min-run-time", type=float, default=0.2,
                        help="seconds per Timer measurement (blocked_autorange's own default, 0.2)")
    parser.add_argument("--match", help="only the cases whose name or case id matches this regular expression")
    parser.add_argument("--limit", type=int, help="only the first LIMIT cases (after --match)")
    parser.add_argument("--allocators", nargs="+", choices=ALLOCATORS, default=list(ALLOCATORS))
    parser.add_argument("--retry-rounds", type=int, default=None,
                        help="rounds to measure a noisy disagreement again, in a fresh process, before judging "
                             "it on all its rounds (default twice --rounds; 0: never)")
    parser.add_argument("--out", type=Path, help="write the table as CSV, or JSON if the name ends in .json")
    parser.add_argument("--sweep", action="store_true", help="time attnbench by a run of the suite (forward "
                        "only) instead, the Timer afterwards: what the sweep's protocol costs; exits 0")
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("STEADY_RUN", "DEFAULT_RUN"),
                        help="--sweep with these runs of the suite (default: run them now)")
    parser.add_argument("--no-turns", action="store_true", help="--sweep: each case's samples back to back "
                        "(timing.interleave: false), as the Timer takes them, not in turns with its peers")
    parser.add_argument("--measure", choices=ALLOCATORS, help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--cases", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timer-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs or args.no_turns:
        args.sweep = True
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.retry_rounds is None:
        args.retry_rounds = 2 * args.rounds
    if args.retry_rounds < 0:
        parser.error("--retry-rounds must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        cases = json.loads(args.cases.read_text())
        result = measure(cases, args.measure, args.rounds, args.min_run_time, args.timer_only)
        args.result.write_text(json.dumps(result))
        return 0
    cases = select(suite_cases(args.suite), args.match, args.limit)
    if not cases:
        print("no CPU forward case to measure", file=sys.stderr)
        return 2
    allocators = ALLOCATORS if args.runs else args.allocators
    mode = "sweep" + (" (--no-turns)" if args.no_turns else " (in turns)") if args.sweep else "interleaved"
    print(f"{len(cases)} forward cases of {args.suite}, {mode}, {args.rounds} rounds, Timer min_run_time "
          f"{args.min_run_time} s, allocators {', '.join(allocators)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    malloc: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, allocator in enumerate(allocators):
            figures = None
            if args.sweep:
                run_dir = args.runs[i] if args.runs else run_attnbench(args.suite, allocator, Path(tmp),
                                                                         turns=not args.no_turns)
                figures = sweep_figures(run_dir)
            result = measure_in_child(cases, allocator, args, Path(tmp), timer_only=args.sweep)
            malloc[allocator] = result["malloc"]
            retried: dict[str, dict[str, Any]] = {}
            if not args.sweep and args.retry_rounds:
                # A noisy disagreement is measured again, in a fresh process, and judged on all its
                # rounds: a difference of the timers persists, one the machine made does not.
                noisy = [spec for spec, got in zip(cases, result["cases"], strict=True)
                         if not got.get("error") and retry_wanted(summarize(got["attnbench"], got["timer"],
                                                                            faults=got.get("faults")))]
                if noisy:
                    print(f"  [{allocator}] {len(noisy)} noisy disagreement(s): {args.retry_rounds} more rounds",
                          file=sys.stderr, flush=True)
                    again = measure_in_child(noisy, allocator, args, Path(tmp), rounds=args.retry_rounds)
                    retried = {spec["case_id"]: got for spec, got in zip(noisy, again["cases"], strict=True)}
            for spec, got in zip(cases, result["cases"], strict=True):
                if spec["case_id"] in retried and not retried[spec["case_id"]].get("error"):
                    got = {**merged(got, retried[spec["case_id"]]), "retried": True}
                row: dict[str, Any] = {"case": spec["name"], "allocator": allocator}
                if got.get("error"):
                    rows.append({**row, "error": got["error"]})
                    continue
                if figures is None:
                    row.update(summarize(got["attnbench"], got["timer"], faults=got.get("faults")))
                    if got.get("retried"):
                        row["retried"] = True
                        verdict_now = row["verdict"]
                        row["verdict"] = (f"{verdict_now[:-1]}; measured again)" if verdict_now.endswith(")")
                                          else f"{verdict_now} (measured again)")
                elif spec["case_id"] in figures:
                    median, spread = figures[spec["case_id"]]
                    row.update(summarize([median], got["timer"]))
                    row["attnbench_spread"] = spread
                    row["verdict"] = verdict(row["ratio"], [spread, row["timer_spread"]])
                else:
                    rows.append({**row, "error": "not measured by the run"})
                    continue
                rows.append({**row, "threads": got["threads"]})
    wall = time.perf_counter() - started
    print("\n".join(table_lines(rows)))
    print()
    print("\n".join(summary_lines(rows)))
    threads = sorted({r["threads"] for r in rows if r.get("threads")})
    print(f"{wall:.0f} s; torch threads {', '.join(map(str, threads))}; malloc as applied: "
          + ", ".join(f"{a} -> {m}" for a, m in malloc.items()))
    if args.out:
        write_out(args.out, rows, {"suite": str(args.suite), "mode": mode, "rounds": args.rounds,
                                   "min_run_time": args.min_run_time, "tolerance": TOLERANCE,
                                   "noisy_spread": NOISY_SPREAD, "malloc": malloc, "wall_s": wall})
    if args.sweep:
        print("(--sweep reports what the sweep's protocol costs; the check is the default, interleaved mode)")
        return 0
    return 0 if all(agrees(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

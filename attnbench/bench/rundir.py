"""The run directory: creating it, reopening it for ``--resume`` when the
suite still gives comparable figures, and run.json.

Every finished case is appended to cases.jsonl at once (by the sweep), so an
interrupted sweep loses only the case in flight and ``--resume`` picks up the
rest.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.bench.environment import collect_environment
from attnbench.bench.shard import Shard
from attnbench.errors import AttnbenchError, ResultsError
from attnbench.model import DEFAULT_DECODE_STEPS
from attnbench.store.results import RECORD_SCHEMA, load_run, write_atomic
from attnbench.suite.load import Suite


@dataclass
class RunOptions:
    out_dir: Path = Path("results")
    resume: Path | None = None
    in_process: bool = False
    quiet: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    preload: list[str] = field(default_factory=list)  # modules each worker imports (custom variants)
    shard: Shard | None = None  # run only this part of the suite (--shard K/N)
    executor: str = "local"  # local | ray
    address: str | None = None  # ray: the cluster to join (auto, HOST:PORT); None starts one here
    devices: list[str] | None = None  # local: one worker per device (--devices)
    allow_shared_cpu: bool = False  # local: more than one CPU worker, each on its share of the cores


def _new_run_dir(out_dir: Path, suite_name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in suite_name)
    base = out_dir / f"{stamp}-{safe}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def _check_out_dir(out_dir: Path) -> None:
    """--out must be a directory or creatable as one; say which path is in the way."""
    for parent in [out_dir, *out_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                what = "--out" if parent == out_dir else f"--out {out_dir}"
                raise ResultsError(f"{parent}: is a file, not a directory; {what} needs a directory for "
                                   "results")
            break


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".attnbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write results there ({exc.strerror or exc})") from None


_COMPARABLE_CASE_KEYS = ("variant", "params", "passes", "compile", "decode_steps")

#: Timing keys added after runs were recorded, and how such a run measured:
#: a run recorded before ``rounds`` visited each case once, one before
#: ``interleave`` measured one case after another. Its suite resumes with
#: those values set, and is refused, saying so, with anything else.
TIMING_BEFORE_KEY = {"rounds": 1, "interleave": False, "allocator": "steady"}


def _differences(meta: dict[str, Any], suite: Suite, done: list[dict[str, Any]]) -> list[str]:
    """What changed between the suite a run was started with and ``suite`` in
    a way that makes their figures incomparable. Adding or removing variants
    and sizes is fine (only the missing cases run); changing how a variant is
    built, what is timed or how is not."""
    diffs = []
    old_name = meta.get("suite_name")
    if old_name is not None and old_name != suite.name:
        diffs.append(f"suite name: {old_name!r} -> {suite.name!r} (is this the suite the run was started with?)")
    old, new = meta.get("fingerprint") or {}, suite.fingerprint()
    old_timing, new_timing = old.get("timing"), new.get("timing")
    if isinstance(old_timing, dict):
        for key in sorted(set(old_timing) | set(new_timing)):
            implied = key not in old_timing and key in TIMING_BEFORE_KEY
            before = TIMING_BEFORE_KEY[key] if implied else old_timing.get(key)
            if before != new_timing.get(key):
                note = " (the run predates this key)" if implied else ""
                diffs.append(f"timing.{key}: {before!r}{note} -> {new_timing.get(key)!r}")
    elif old_timing != new_timing:
        diffs.append(f"timing settings: {old_timing!r} -> {new_timing!r}")
    diffs += _quality_differences(old.get("quality"), new.get("quality"))
    old_v, new_v = old.get("variants") or {}, new.get("variants") or {}
    for label in sorted(set(old_v) & set(new_v)):
        if old_v[label] != new_v[label]:
            diffs.append(f"variant {label!r}: {old_v[label]} -> {new_v[label]}")
    # Per finished case: what the case id does not show (passes, compile, params).
    new_cases = {c.case_id: c.to_dict() for c in suite.cases()}
    seen: set[tuple[str, str]] = set()
    for record in done:
        case = new_cases.get(record["case_id"])
        if case is None:
            continue
        for key in _COMPARABLE_CASE_KEYS:
            before, after = record["case"].get(key), case.get(key)
            if key == "compile":
                before = bool(before)
            if key == "decode_steps" and before is None:  # recorded before decode existed
                before = DEFAULT_DECODE_STEPS
            if before != after and (case["label"], key) not in seen:
                seen.add((case["label"], key))
                diffs.append(f"{case['label']} {key}: {before!r} -> {after!r}")
    return list(dict.fromkeys(diffs))


def _quality_differences(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """What changed in the quality section that makes recorded measures incomparable: the
    layer's size of the approximation error, MQAR's sizes and budget, a variant's MQAR
    parameters. More seeds, N or regimes are fine: only the missing measurements run."""
    if not old or not new:
        return []
    pairs = [(f"quality.approx.{k}", old.get("approx", {}).get(k), new.get("approx", {}).get(k))
             for k in ("dim", "heads")]
    old_m, new_m = old.get("mqar", {}), new.get("mqar", {})
    pairs += [(f"quality.mqar.{k}", old_m.get(k), new_m.get(k))
              for k in sorted(set(old_m) | set(new_m)) if k not in ("seeds", "params")]
    old_p, new_p = old_m.get("params") or {}, new_m.get("params") or {}
    pairs += [(f"quality.mqar.params.{k}", old_p.get(k), new_p.get(k)) for k in sorted(set(old_p) | set(new_p))]
    return [f"{key}: {a!r} -> {b!r}" for key, a, b in pairs if a != b]


def prepare_run_dir(suite: Suite, options: RunOptions) -> tuple[Path, dict[str, Any], list[dict[str, Any]],
                                                                    list[str]]:
    """Create (or reopen for --resume) the results directory. Everything is
    checked before anything is written. Returns (directory, run.json's
    contents, the records already there, warnings about them)."""
    if options.resume is not None:
        run = load_run(options.resume)
        diffs = _differences(run.meta, suite, run.records) + _shard_differences(run.meta, options.shard)
        if diffs:
            raise AttnbenchError(f"{options.resume}: the suite changed since this run, so the results would "
                                 "not be comparable:\n  " + "\n  ".join(diffs)
                                 + "\nSet the suite back to the run's values, or start a new run instead "
                                 "(drop --resume).")
        _check_writable(run.path)
        meta = run.meta
        now = dt.datetime.now().astimezone().isoformat()
        meta.setdefault("resumed_at", []).append(now)
        # run.json describes what the run now is: the suite it was resumed with (which
        # may have grown), and in `history` each command that added cases to it.
        done_ids = {r["case_id"] for r in run.records}
        history = meta.setdefault("history", [{"command": meta.get("command"), "started": meta.get("started_at"),
                                               "cases_added": len(done_ids)}])
        history.append({"command": options.command, "started": now,
                        "cases_added": sum(c.case_id not in done_ids for c in suite.cases())})
        meta.update(suite_name=suite.name, suite_path=str(suite.path), suite=suite.raw,
                    fingerprint=suite.fingerprint(), baseline=suite.baseline, published=suite.published,
                    status="running")
        return run.path, meta, run.visits, run.warnings
    _check_out_dir(options.out_dir)
    run_dir = _new_run_dir(options.out_dir, suite.name)
    environment = collect_environment()
    _check_writable(run_dir)
    meta = {
        "schema": RECORD_SCHEMA,
        "run_id": run_dir.name,
        "suite_name": suite.name,
        "suite_path": str(suite.path),
        "suite": suite.raw,
        "fingerprint": suite.fingerprint(),
        "baseline": suite.baseline,
        "published": suite.published,
        "command": options.command,
        "started_at": dt.datetime.now().astimezone().isoformat(),
        "status": "running",
        "history": [{"command": options.command, "started": dt.datetime.now().astimezone().isoformat(),
                     "cases_added": len(suite.cases())}],
        "in_process": options.in_process,
        "environment": environment,
    }
    if options.shard is not None:
        meta["shard"] = {**options.shard.to_dict(), "suite_cases": len(suite.cases())}
    return run_dir, meta, [], []


def _shard_differences(meta: dict[str, Any], shard: Shard | None) -> list[str]:
    """A shard resumes as the same shard: --shard, when given, must be the run's."""
    recorded = meta.get("shard")
    if shard is None or (recorded and (recorded.get("index"), recorded.get("count")) == (shard.index, shard.count)):
        return []
    before = f"{recorded.get('index')}/{recorded.get('count')}" if recorded else "the whole suite"
    return [f"shard: {before} -> {shard}"]


def run_shard(meta: dict[str, Any]) -> Shard | None:
    """The part of the suite a run directory holds (None: the whole suite)."""
    recorded = meta.get("shard")
    return Shard(int(recorded["index"]), int(recorded["count"])) if recorded else None


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    write_atomic(run_dir / "run.json", json.dumps(meta, indent=2, default=str) + "\n")

"""``attnbench merge``: the parts of one sweep (shards of a SLURM array, runs
on several machines) into one results directory that ``report``,
``compare`` and ``run --resume`` read like any other.

The parts must be of the same suite (name and fingerprint: timing, variants
and their parameters) and the same code (attnbench version and git commit),
and must not hold the same case twice; anything else is refused with what
differs, before anything is written. The merged directory appears whole or
not at all (it is written beside its place and renamed into it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import ResultsError
from attnbench.store.results import (
    QUALITY_FILE,
    RECORD_SCHEMA,
    Run,
    load_run,
    read_quality,
    records_frame,
    rewrite_records,
    write_atomic,
    write_csv,
)

#: What the parts must agree on, from run.json, and how to name it.
_SAME_SUITE = (("suite_name", "suite name"), ("fingerprint", "suite fingerprint (timing, variants, parameters)"))
_SAME_CODE = (("attnbench", "attnbench version"), ("git_commit", "git commit"))


class MergeError(ResultsError):
    """Parts that cannot be merged: different suites or code, or overlapping cases."""


@dataclass
class MergeSummary:
    run_dir: Path
    records: list[dict[str, Any]]
    parts: int
    warnings: list[str] = field(default_factory=list)
    complete: bool = True


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_same(runs: list[Run]) -> None:
    first = runs[0]
    problems = []
    for run in runs[1:]:
        for key, name in _SAME_SUITE:
            if run.meta.get(key) != first.meta.get(key):
                problems.append(f"{run.path}: {name} {_show(run.meta.get(key))} differs from {first.path}'s "
                                f"{_show(first.meta.get(key))}")
        env, env0 = run.meta.get("environment") or {}, first.meta.get("environment") or {}
        for key, name in _SAME_CODE:
            if env.get(key) != env0.get(key):
                problems.append(f"{run.path}: {name} {env.get(key)!r} differs from {first.path}'s {env0.get(key)!r}")
    if problems:
        raise MergeError("these runs are not parts of one sweep:\n  " + "\n  ".join(problems)
                         + "\nMerge only the shards of one suite run with the same attnbench.")


def _check_disjoint(runs: list[Run]) -> None:
    owner: dict[str, Path] = {}
    overlaps = []
    for run in runs:
        for record in run.records:
            other = owner.setdefault(record["case_id"], run.path)
            if other != run.path:
                overlaps.append(f"{record['case_id']} is in {other} and {run.path}")
    shards: dict[tuple[int, int], Path] = {}
    for run in runs:
        shard = run.meta.get("shard")
        if shard:
            key = (shard.get("index"), shard.get("count"))
            if key in shards:
                overlaps.insert(0, f"shard {key[0]}/{key[1]} twice: {shards[key]} and {run.path}")
            shards[key] = run.path
    if overlaps:
        shown = overlaps[:5] + ([f"... and {len(overlaps) - 5} more"] if len(overlaps) > 5 else [])
        raise MergeError("the parts overlap (a case may appear in one part only):\n  " + "\n  ".join(shown))


def _completeness(runs: list[Run]) -> tuple[list[str], int | None]:
    """What is missing from the whole (one warning each), and the suite's case count when known."""
    warnings = []
    shards = [run.meta.get("shard") for run in runs]
    total = None
    if all(shards):
        counts = {s.get("count") for s in shards}
        if len(counts) > 1:
            raise MergeError("the parts are shards of different splits: "
                             + ", ".join(f"{run.path} is {s.get('index')}/{s.get('count')}"
                                         for run, s in zip(runs, shards, strict=True)))
        count = counts.pop()
        missing = sorted(set(range(1, count + 1)) - {s.get("index") for s in shards})
        if missing:
            warnings.append(f"shard(s) {', '.join(f'{k}/{count}' for k in missing)} not given: the merged run "
                            "is incomplete (attnbench run SUITE --resume MERGED runs what is missing)")
        total = shards[0].get("suite_cases")
    unfinished = [run for run in runs if run.meta.get("status") != "finished"]
    for run in unfinished:
        warnings.append(f"{run.path}: status {run.meta.get('status')!r}, not finished; its missing cases are "
                        "missing from the merged run")
    return warnings, total


def _quality_records(runs: list[Run], warnings: list[str]) -> list[dict[str, Any]] | None:
    """The parts' quality.jsonl records (a sharded sweep measures them in shard 1), or None if none has any."""
    found = [(run, read_quality(run.path / QUALITY_FILE)) for run in runs if (run.path / QUALITY_FILE).exists()]
    if not found:
        return None
    owner: dict[str, Path] = {}
    quality = []
    for run, (records, notes) in found:
        warnings += notes
        for record in records:
            other = owner.setdefault(str(record.get("task_id")), run.path)
            if other != run.path:
                raise MergeError(f"the parts overlap: quality task {record.get('task_id')} is in {other} and "
                                 f"{run.path}")
            quality.append(record)
    return quality


def _check_out(out: Path, parts: list[Path]) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ResultsError(f"{out}: already exists; merge writes a new results directory (choose another --out)")
    resolved = out.resolve()
    for part in parts:
        if part.resolve() == resolved:
            raise ResultsError(f"{out}: is one of the parts; merge writes a new results directory")


def merge_runs(parts: list[str | Path], out: str | Path, command: list[str] | None = None) -> MergeSummary:
    """Merge the run directories ``parts`` into a new run directory ``out``."""
    out_path = Path(out)
    part_paths = [Path(p) for p in parts]
    if not part_paths:
        raise ResultsError("merge: give the run directories to merge")
    if len({p.resolve() for p in part_paths}) != len(part_paths):
        raise MergeError("merge: the same run directory is given twice")
    _check_out(out_path, part_paths)
    runs = [load_run(p) for p in part_paths]
    _check_same(runs)
    _check_disjoint(runs)
    warnings, total = _completeness(runs)
    complete = not warnings
    for run in runs:
        warnings += run.warnings
    runs.sort(key=lambda r: ((r.meta.get("shard") or {}).get("index") or 0, str(r.path)))
    records = [record for run in runs for record in run.records]  # one per case
    visits = [visit for run in runs for visit in (run.visits or run.records)]  # as cases.jsonl holds them
    quality = _quality_records(runs, warnings)
    meta = _merged_meta(runs, out_path.name, records, total, complete, command)
    _write(out_path, meta, visits, quality)
    return MergeSummary(run_dir=out_path, records=records, parts=len(runs), warnings=warnings, complete=complete)


def _merged_meta(runs: list[Run], run_id: str, records: list[dict[str, Any]], total: int | None, complete: bool,
                 command: list[str] | None) -> dict[str, Any]:
    first = runs[0].meta
    keep = ("suite_name", "suite_path", "suite", "fingerprint", "baseline", "published", "environment")
    started = [r.meta.get("started_at") for r in runs if r.meta.get("started_at")]
    finished = [r.meta.get("finished_at") for r in runs if r.meta.get("finished_at")]
    return {
        "schema": first.get("schema", RECORD_SCHEMA),
        "run_id": run_id,
        **{key: first.get(key) for key in keep},
        "command": command or [],
        "started_at": min(started) if started else None,
        "finished_at": max(finished) if finished else None,
        "merged_at": dt.datetime.now().astimezone().isoformat(),
        "status": "finished" if complete else "incomplete",
        "cases_total": total if total is not None else len(records),
        "cases_done": len(records),
        "merged_from": [{"run_id": r.run_id, "path": str(r.path), "shard": r.meta.get("shard"),
                         "status": r.meta.get("status"), "started_at": r.meta.get("started_at"),
                         "finished_at": r.meta.get("finished_at"), "cases": len(r.records),
                         "command": r.meta.get("command"), "environment": r.meta.get("environment")}
                        for r in runs],
    }


def _write(out: Path, meta: dict[str, Any], records: list[dict[str, Any]],
           quality: list[dict[str, Any]] | None = None) -> None:
    """Write the merged run beside ``out`` and rename it into place."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ResultsError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    try:
        rewrite_records(staging / "cases.jsonl", records)
        if quality is not None:
            rewrite_records(staging / QUALITY_FILE, quality)
        write_csv(records_frame(records, meta["run_id"], meta), staging / "results.csv")
        write_atomic(staging / "run.json", json.dumps(meta, indent=2, default=str) + "\n")
        os.chmod(staging, 0o777 & ~_umask())
        if out.exists():  # an empty directory (checked): rename replaces it
            out.rmdir()
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

"""The sweep: every case of a suite not already in the run directory, each
recorded the moment it finishes.

The sweep plans work units (today one case each, in suite order: per variant,
devices x heads x N with N innermost, so that an out-of-memory N skips the
larger ones of its series), asks the skip policy about each case, hands the
rest to an executor (``executor.py``) and appends every outcome to
cases.jsonl. Only the sweep writes to the run directory.

SIGINT/SIGTERM kill the case in flight, never interrupt the recording of a
finished one, and leave results.csv and run.json written.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.bench.executor import Executor, InProcessExecutor, LocalPoolExecutor, WorkUnit
from attnbench.bench.messages import CaseStarted
from attnbench.bench.progress import Progress
from attnbench.bench.quality import QUALITY_FAILURES, run_quality
from attnbench.bench.records import finished_record, skipped_record
from attnbench.bench.rundir import RunOptions, prepare_run_dir, run_shard, write_meta
from attnbench.bench.shard import Shard, setting_groups, shard_cases
from attnbench.bench.signals import Interrupted, SignalGuard
from attnbench.bench.skip import skip_reason
from attnbench.errors import AttnbenchError
from attnbench.model import HARMLESS, Case, Status
from attnbench.results import append_record, records_frame, rewrite_records, write_csv
from attnbench.suite import Suite
from attnbench.variants.registry import registered

POLL_S = 0.1  # how long the sweep waits for an event before checking signals again

__all__ = ["RunOptions", "RunSummary", "plan_units", "preload_modules", "resume_command", "run_suite"]


@dataclass
class RunSummary:
    run_dir: Path
    records: list[dict[str, Any]]
    interrupted: bool = False
    ran: int = 0
    warnings: list[str] = field(default_factory=list)
    in_process: bool = False
    workers_started: int = 0
    shard: Shard | None = None
    quality: list[dict[str, Any]] = field(default_factory=list)  # quality.jsonl's records

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != Status.OK]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        failed = any(r["status"] not in HARMLESS for r in self.records)
        return 3 if failed or any(r["status"] in QUALITY_FAILURES for r in self.quality) else 0


def plan_units(cases: list[Case], by_setting: bool = False) -> list[WorkUnit]:
    """The order of work: one unit per case, in suite order (each case visited
    once); with ``by_setting``, one unit per setting group (all variants at one
    N, heads, dim, batch, dtype, device), groups in suite order, so that an
    executor that spreads units over devices keeps each group on one device."""
    if by_setting:
        return [WorkUnit(tuple(group)) for group in setting_groups(cases)]
    return [WorkUnit((case,)) for case in cases]


def make_executor(suite: Suite, options: RunOptions) -> Executor:
    preload = options.preload + preload_modules(suite)
    if options.in_process:
        return InProcessExecutor()
    if options.executor == "ray":
        from attnbench.bench.ray_executor import RayExecutor

        return RayExecutor(preload, address=options.address, device_kind=_device_kind(suite))
    if options.devices:
        from attnbench.bench.devices import DevicePoolExecutor

        return DevicePoolExecutor(options.devices, preload, allow_shared_cpu=options.allow_shared_cpu)
    return LocalPoolExecutor(preload)


def _device_kind(suite: Suite) -> str:
    kinds = {("cuda" if c.device.startswith("cuda") else c.device) for c in suite.cases()}
    if len(kinds) > 1:
        raise AttnbenchError(f"{suite.path}: the suite mixes devices ({', '.join(sorted(kinds))}); a cluster run "
                             "takes one kind: give --device cuda or --device cpu")
    return kinds.pop() if kinds else "cpu"


def run_suite(suite: Suite, options: RunOptions, executor: Executor | None = None) -> RunSummary:
    """Run every case of ``suite`` not already in the run directory.

    SIGINT/SIGTERM stop the case in flight (its worker is killed), then
    results.csv and run.json are written from what finished and the summary
    says ``interrupted``; ``--resume`` runs the rest."""
    executor = executor or make_executor(suite, options)
    try:
        run_dir, meta, done, warnings = prepare_run_dir(suite, options)
        meta["executor"] = executor.describe()  # how this (part of the) run was spread, e.g. shared CPU
        write_meta(run_dir, meta)
        jsonl = run_dir / "cases.jsonl"
        if done and warnings:
            # Drop a truncated last line now so that appends start on a fresh line.
            rewrite_records(jsonl, done)
    except BaseException:
        executor.close(interrupted=True)
        raise
    done_ids = {r["case_id"] for r in done}
    all_cases = suite.cases()
    shard = run_shard(meta)
    if shard is not None:  # split the whole suite, never what is left: the parts must stay disjoint
        all_cases = shard_cases(all_cases, shard)
    cases = [c for c in all_cases if c.case_id not in done_ids]
    if cases:
        executor.prepare()
    records = list(done)
    summary = RunSummary(run_dir=run_dir, records=records, warnings=warnings, in_process=executor.in_process,
                         shard=shard)
    guard = SignalGuard().install()

    def finish(record: dict[str, Any], progress: Progress) -> None:
        with guard.deferred():  # a finished case is recorded whole, whatever signal comes
            append_record(jsonl, record)
            records.append(record)
            summary.ran += 1
            progress.finished(record)

    try:
        with Progress(len(cases), options.quiet) as progress:
            waiting = deque(plan_units(cases, by_setting=executor.distributed))
            while waiting or executor.in_flight:
                # Keep every slot busy; the skip policy judges a unit when it is handed over.
                while waiting and executor.in_flight < executor.slots:
                    runnable = []
                    for case in waiting.popleft().cases:
                        guard.check()
                        reason = skip_reason(case, records)
                        if reason:
                            progress.start(case)
                            finish(skipped_record(case, reason), progress)
                        else:
                            runnable.append(case)
                    if runnable:
                        executor.submit(WorkUnit(tuple(runnable)))
                for event in executor.poll(POLL_S):
                    if isinstance(event, CaseStarted):
                        progress.start(event.case)
                    else:
                        finish(finished_record(event), progress)
                guard.check()
        if shard is None or shard.index == 1:  # the quality tasks once per sweep: in its first shard
            summary.quality, _ = run_quality(suite, run_dir, guard, options.quiet)
    except (Interrupted, KeyboardInterrupt):
        summary.interrupted = True
    finally:
        guard.hold()  # a second Ctrl-C must not cut the final writes short
        try:
            summary.workers_started = executor.workers_started
            executor.close(interrupted=summary.interrupted)
            write_csv(records_frame(records, run_dir.name), run_dir / "results.csv")
            meta["status"] = "interrupted" if summary.interrupted else "finished"
            meta["finished_at"] = dt.datetime.now().astimezone().isoformat()
            meta["cases_total"] = len(all_cases)
            meta["cases_done"] = len(records)
            if suite.quality is not None:
                meta["quality_done"] = len(summary.quality)
            write_meta(run_dir, meta)
        finally:
            guard.restore()
    return summary


def preload_modules(suite: Suite) -> list[str]:
    """Modules a worker must import to know the suite's variants that were
    registered outside attnbench (by a test, a script or a plugin)."""
    variants = registered()
    modules = []
    for spec in suite.variants:
        entry = variants.get(spec.name)
        module = getattr(entry.target, "__module__", "") if entry else ""
        if module and module != "__main__" and not module.startswith("attnbench.variants"):
            modules.append(module)
    return sorted(set(modules))


@dataclass
class Spread:
    """How ``run``'s options spread the cases: the devices of --devices, the
    device kind they impose on the suite, and the options to repeat on resume."""

    devices: list[str] | None = None
    device: str | None = None
    args: list[str] = field(default_factory=list)


def spread_options(executor: str = "local", address: str | None = None, devices: str | None = None,
                   allow_shared_cpu: bool = False, in_process: bool = False, device: str | None = None) -> Spread:
    """Check --executor, --address, --devices and --allow-shared-cpu together."""
    if executor not in ("local", "ray"):
        raise AttnbenchError(f"--executor {executor!r}: choose local or ray")
    if address is not None and executor != "ray":
        raise AttnbenchError("--address is the Ray cluster to join: use it with --executor ray")
    if executor == "ray":
        if in_process or devices:
            raise AttnbenchError("--executor ray places every unit itself: drop "
                                 + ("--in-process" if in_process else "--devices"))
        from attnbench.bench.ray_executor import import_ray

        import_ray()  # missing: a clear message now, before anything is written
        return Spread(args=["--executor", "ray"] + (["--address", address] if address else []))
    if devices is None:
        if allow_shared_cpu:
            raise AttnbenchError("--allow-shared-cpu goes with --devices cpu,cpu,... (several CPU workers)")
        return Spread()
    if in_process:
        raise AttnbenchError("--devices runs a worker per device: it cannot be combined with --in-process")
    from attnbench.bench.devices import device_kind, parse_devices

    chosen = parse_devices(devices)
    kind = device_kind(chosen)
    if device is not None and not device.startswith(kind):
        raise AttnbenchError(f"--device {device} and --devices {devices} disagree; --devices alone is enough")
    args = ["--devices", devices] + (["--allow-shared-cpu"] if allow_shared_cpu else [])
    return Spread(devices=chosen, device=kind, args=args)


def resume_command(summary: RunSummary, suite_path: str, quick: bool = False, device: str | None = None,
                   extra: list[str] | None = None) -> str:
    """The command that finishes an interrupted run, ready to paste."""
    parts = ["attnbench", "run", suite_path]
    if quick:
        parts.append("--quick")
    if device:
        parts += ["--device", device]
    parts += extra or []
    if summary.in_process:
        parts.append("--in-process")
    if summary.shard is not None:
        parts += ["--shard", str(summary.shard)]
    parts += ["--resume", str(summary.run_dir)]
    return shlex.join(parts)

"""The sweep: every visit of every case of a suite not already in the run
directory, each recorded the moment it finishes.

The sweep plans rounds of work units (``plan_units``): each round visits
every case once, in a shuffled order seeded by the run's ``order_seed``
(run.json), so slow drift of the machine hits all cases alike and every case
is measured at ``timing.rounds`` separate moments, each round in a fresh
worker. It asks the skip policy about each visit, hands the rest to an
executor (``executor.py``) and appends every outcome to cases.jsonl, one
record per visit. Only the sweep writes to the run directory. The device is
calibrated (``calibration.py``) at the start and the end of the sweep, and
what else the machine did is monitored (``noise.py``); both go into run.json.

SIGINT/SIGTERM kill the case in flight, never interrupt the recording of a
finished one, and leave results.csv and run.json written.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shlex
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attnbench.bench.executors.base import Executor, WorkUnit
from attnbench.bench.executors.spread import make_executor
from attnbench.bench.noise import NoiseMonitor, run_warnings
from attnbench.bench.progress import Progress
from attnbench.bench.quality import QUALITY_FAILURES, run_quality
from attnbench.bench.records import finished_record, skipped_record
from attnbench.bench.rundir import RunOptions, prepare_run_dir, run_shard, write_meta
from attnbench.bench.shard import Shard, setting_groups, shard_cases
from attnbench.bench.signals import Interrupted, SignalGuard
from attnbench.bench.skip import skip_reason, unrunnable_warnings
from attnbench.bench.worker.messages import CaseStarted
from attnbench.bench.worker.setup import MALLOC_ENV
from attnbench.model import HARMLESS, Case, Status
from attnbench.store.results import append_record, records_frame, rewrite_records, write_csv
from attnbench.store.visits import merge_visits, visit_round
from attnbench.suite.load import Suite

POLL_S = 0.1  # how long the sweep waits for an event before checking signals again

__all__ = ["RunSummary", "plan_units", "resume_command", "run_suite", "setting_group"]


@dataclass
class RunSummary:
    run_dir: Path
    visits: list[dict[str, Any]]  # as cases.jsonl holds them, one record per visit
    interrupted: bool = False
    ran: int = 0
    warnings: list[str] = field(default_factory=list)
    in_process: bool = False
    workers_started: int = 0
    shard: Shard | None = None
    quality: list[dict[str, Any]] = field(default_factory=list)  # quality.jsonl's records

    @property
    def records(self) -> list[dict[str, Any]]:
        """One record per case, its visits merged."""
        return merge_visits(self.visits)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != Status.OK]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        failed = any(r["status"] not in HARMLESS for r in self.visits)
        return 3 if failed or any(r["status"] in QUALITY_FAILURES for r in self.quality) else 0


def setting_group(case: Case) -> tuple:
    """What the variants of one work unit share: everything but the variant (N last)."""
    return case.setting


def plan_units(cases: list[Case], rounds: int = 1, seed: int = 0, by_setting: bool = False) -> list[WorkUnit]:
    """The order of work: ``rounds`` rounds, each visiting every case once. A
    unit is one setting group in one round (its variants back to back, in a
    shuffled order); each round takes the groups in a shuffled order, except
    that the first round runs smaller N first (shuffled among equal N), so
    that a series that runs out of memory skips its larger N before they run.
    The same cases, rounds and seed give the same plan (``--resume``). One
    round keeps the suite's order, one case a unit: without a second visit
    there is nothing to pair or shuffle for; unless ``by_setting`` (an
    executor that spreads units over devices): then one setting group a unit
    all the same, so that the variants a report pairs share a device.
    """
    if rounds <= 1 and not by_setting:
        return [WorkUnit((case,)) for case in cases]
    rng = random.Random(seed)
    groups = setting_groups(cases)
    units = []
    for r in range(max(rounds, 1)):
        order = list(groups)
        rng.shuffle(order)
        if r == 0:
            order.sort(key=lambda group: group[0].seq_len)  # stable: shuffled among equal N
        for group in order:
            members = [replace(c, round=r) for c in group]
            rng.shuffle(members)
            units.append(WorkUnit(tuple(members), round=r))
    return units


def _calibrate(executor: Executor, cases: list[Case]) -> list[dict[str, Any]]:
    """One calibration per device and dtype the cases use."""
    targets = dict.fromkeys((c.device, c.dtype) for c in cases)
    return [executor.calibrate(device, dtype) for device, dtype in targets]


def run_suite(suite: Suite, options: RunOptions, executor: Executor | None = None) -> RunSummary:
    """Run every visit of every case of ``suite`` not already in the run directory.

    SIGINT/SIGTERM stop the case in flight (its worker is killed), then
    results.csv and run.json are written from what finished and the summary
    says ``interrupted``; ``--resume`` runs the rest, in the same order."""
    all_cases = suite.cases()
    unrunnable = unrunnable_warnings(all_cases)
    os.environ[MALLOC_ENV] = suite.timing.allocator  # read by every worker and calibration this run starts
    executor = executor or make_executor(suite, options)
    try:
        run_dir, meta, done, warnings = prepare_run_dir(suite, options)
        warnings = warnings + unrunnable + suite.refused()
        meta.setdefault("order_seed", random.SystemRandom().randrange(2**32))
        meta["executor"] = executor.describe()  # how this (part of the) run was spread, e.g. shared CPU
        meta["allocator"] = suite.timing.allocator
        write_meta(run_dir, meta)
        jsonl = run_dir / "cases.jsonl"
        jsonl.touch()  # a run directory always has its (maybe empty) list of cases
        if done and warnings:
            # Drop a truncated last line now so that appends start on a fresh line.
            rewrite_records(jsonl, done)
    except BaseException:
        executor.close(interrupted=True)
        raise
    done_visits = {(r["case_id"], visit_round(r)) for r in done}
    shard = run_shard(meta)
    if shard is not None:  # split the whole suite, never what is left: the parts must stay disjoint
        all_cases = shard_cases(all_cases, shard)
    planned = plan_units(all_cases, suite.timing.rounds, meta["order_seed"], by_setting=executor.distributed)
    units = [WorkUnit(tuple(c for c in unit.cases if (c.case_id, c.round) not in done_visits), unit.round)
             for unit in planned]
    units = [unit for unit in units if unit.cases]
    todo = sum(len(unit.cases) for unit in units)
    records = list(done)
    summary = RunSummary(run_dir=run_dir, visits=records, warnings=warnings, in_process=executor.in_process,
                         shard=shard)
    guard = SignalGuard().install()
    monitor = NoiseMonitor()

    order = {case.case_id: i for i, case in enumerate(all_cases)}

    def finish(record: dict[str, Any], progress: Progress) -> None:
        record["case_index"] = order.get(record["case_id"])  # the suite's order, which rounds shuffle
        with guard.deferred():  # a finished visit is recorded whole, whatever signal comes
            append_record(jsonl, record)
            records.append(record)
            summary.ran += 1
            progress.finished(record)

    try:
        if units:
            executor.prepare()
            monitor.start()
            calibration = meta.setdefault("calibration", {})
            calibration.setdefault("start", _calibrate(executor, all_cases))
            write_meta(run_dir, meta)
        with Progress(todo, options.quiet, suite.timing.rounds) as progress:
            waiting, current_round = deque(units), None
            while waiting or executor.in_flight:
                # Keep every slot busy; the skip policy judges a unit when it is handed over.
                while waiting and executor.in_flight < executor.slots:
                    unit = waiting.popleft()
                    if unit.round != current_round:
                        if current_round is not None and not executor.in_flight:
                            # Between rounds, with nothing running: the machine's limits again, so that
                            # the peak a figure is held against is the best it showed, not one moment's.
                            calibration.setdefault("rounds", []).extend(_calibrate(executor, all_cases))
                        executor.fresh()  # a distributed executor starts each unit's round fresh itself
                        current_round = unit.round
                    runnable = []
                    for case in unit.cases:
                        guard.check()
                        reason = skip_reason(case, records)
                        if reason:
                            progress.start(case)
                            finish(skipped_record(case, reason), progress)
                        else:
                            runnable.append(case)
                    if runnable:
                        executor.submit(WorkUnit(tuple(runnable), unit.round))
                for event in executor.poll(POLL_S):
                    if isinstance(event, CaseStarted):
                        progress.start(event.case)
                    else:
                        finish(finished_record(event), progress)
                guard.check()
        if units:
            meta["calibration"]["end"] = _calibrate(executor, all_cases)
        if shard is None or shard.index == 1:  # the quality tasks once per sweep: in its first shard
            summary.quality, _ = run_quality(suite, run_dir, guard, options.quiet)
    except (Interrupted, KeyboardInterrupt):
        summary.interrupted = True
    finally:
        guard.hold()  # a second Ctrl-C must not cut the final writes short
        try:
            summary.workers_started = executor.workers_started
            executor.close(interrupted=summary.interrupted)
            write_csv(records_frame(records, run_dir.name, meta), run_dir / "results.csv")
            meta["status"] = "interrupted" if summary.interrupted else "finished"
            meta["finished_at"] = dt.datetime.now().astimezone().isoformat()
            # Done and planned together: a resumed run may hold cases its suite no longer lists.
            meta["cases_total"] = len({c.case_id for c in all_cases} | {r["case_id"] for r in records})
            meta["cases_done"] = len({r["case_id"] for r in records})
            meta["visits_total"] = len(all_cases) * suite.timing.rounds
            meta["visits_done"] = len({(r["case_id"], visit_round(r)) for r in records})
            if suite.quality is not None:
                meta["quality_done"] = len(summary.quality)
            if units:
                meta["noise"] = monitor.stop()
            summary.warnings += run_warnings(meta, records)
            write_meta(run_dir, meta)
        finally:
            guard.restore()
    return summary


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

"""The executor seam: where the sweep's work units run.

The sweep decides *what* runs and in which order (a list of work units, each
a list of cases run in order by one worker) and records every outcome; an
executor decides *where*. It runs the cases it is handed and yields, per
case, ``CaseStarted`` then the ``Outcome``; it never writes results.

Here: ``LocalPoolExecutor`` (a reusable worker process that is replaced
when a case crashes, runs out of memory or times out) and
``InProcessExecutor`` (``--in-process``: in the sweep's own process, for
debugging). Executors that run several units at once (one worker per device,
``devices.py``; Ray tasks, ``ray_executor.py``) take units with ``submit``
and hand back events with ``poll`` as units progress; a sequential executor
runs what was submitted when polled.
"""

from __future__ import annotations

import gc
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from attnbench.bench.placement import local_placement
from attnbench.bench.worker.messages import CaseStarted, Event, Outcome
from attnbench.bench.worker.process import (
    SERVER_PRELOAD,
    WorkerPool,
    calibrate_in_child,
    import_modules,
    run_in_process,
    run_unit_in_process,
)
from attnbench.bench.worker.setup import steady_malloc
from attnbench.model import Case


@dataclass(frozen=True)
class WorkUnit:
    """Cases one worker runs in order, one after the other: one round of one
    setting group (every variant at one N, heads, dim, batch, dtype, device),
    so paired ratios compare visits made on the same device at the same time."""

    cases: tuple[Case, ...]
    round: int = 0


def interleavable(cases: Sequence[Case]) -> bool:
    """Whether a unit's cases are measured together, sampled in turns
    (``bench.interleave``): more than one, on one device, with
    ``timing.interleave`` on and no per-case memory limit (which applies to one
    case at a time)."""
    return (len(cases) > 1 and len({c.device for c in cases}) == 1
            and all(c.timing.interleave and not c.limits.memory_limit_mib for c in cases))


def _together(cases: Sequence[Case], run_unit: Callable[[Sequence[Case]], list[Outcome]]) -> Iterator[Event]:
    """The events of ``cases`` measured together by ``run_unit``: all start, then their outcomes."""
    yield from map(CaseStarted, cases)
    for outcome in run_unit(cases):
        outcome.placement = local_placement(outcome.case.device)
        yield outcome


class Executor(ABC):
    """Runs cases and hands back their outcomes, in the order it ran them."""

    in_process: bool = False
    #: How many units it runs at once: the sweep keeps at most this many submitted.
    slots: int = 1
    #: Units go to several workers at once: the sweep then plans one unit per
    #: setting group, so that the variants compared with each other share a device.
    distributed: bool = False

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Called once there is work: start what takes long (a fork server)."""

    def fresh(self) -> None:  # noqa: B027 - optional hook
        """The next cases start in a fresh worker (a new round: each visit of a
        case then runs in another process, so the spread between visits holds
        the spread between processes, as pyperf's workers do)."""

    def calibrate(self, device: str, dtype: str) -> dict[str, Any]:
        """The device's matmul rate and copy bandwidth (``bench.calibration``),
        measured where the cases run."""
        from attnbench.bench.calibration import calibrate

        return calibrate(device, dtype)

    @abstractmethod
    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        """Run ``cases`` in order; per case yield ``CaseStarted``, then its ``Outcome``."""

    def submit(self, unit: WorkUnit) -> None:
        """Take ``unit`` to run. A sequential executor runs it when polled."""
        self._submitted().append(unit)

    def poll(self, timeout_s: float) -> Iterator[Event]:
        """The events of submitted units, as they come (within about
        ``timeout_s`` when none is ready). A sequential executor runs its
        submitted units to the end here."""
        queue = self._submitted()
        while queue:
            yield from self.run(queue.pop(0).cases)

    def describe(self) -> dict[str, Any]:
        """What run.json says about how the cases were run."""
        return {"kind": "in-process" if self.in_process else "local"}

    @property
    def in_flight(self) -> int:
        """Units submitted and not finished."""
        return len(self._submitted())

    def _submitted(self) -> list[WorkUnit]:
        if not hasattr(self, "_queue"):
            self._queue: list[WorkUnit] = []
        return self._queue

    @abstractmethod
    def close(self, interrupted: bool = False) -> None:
        """Release the workers (at once when ``interrupted``)."""

    @property
    def workers_started(self) -> int:
        return 0


class LocalPoolExecutor(Executor):
    """Cases run in a worker process on this machine, each with its timeout."""

    def __init__(self, preload: list[str]) -> None:
        self.pool = WorkerPool(preload)

    def prepare(self) -> None:
        self.pool.prestart()  # the fork server imports torch while the sweep is set up

    def fresh(self) -> None:
        self.pool.close()  # the next case starts a new worker

    def calibrate(self, device: str, dtype: str) -> dict[str, Any]:
        """In a child process: the sweep's own process must not hold GPU memory."""
        return calibrate_in_child(device, dtype)

    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        if interleavable(cases):
            yield from _together(cases, self.pool.run_unit)
            return
        for case in cases:
            yield CaseStarted(case)
            started, t0 = time.time(), time.perf_counter()
            outcome = self.pool.run(case, case.limits.case_timeout_s)
            outcome.started, outcome.wall_s = started, time.perf_counter() - t0
            outcome.placement = local_placement(case.device)
            yield outcome

    def close(self, interrupted: bool = False) -> None:
        if interrupted:
            self.pool.kill()
        else:
            self.pool.close()

    @property
    def workers_started(self) -> int:
        return self.pool.started


class InProcessExecutor(Executor):
    """Cases run in this process: no timeout, and a crash ends the sweep."""

    in_process = True
    _frozen = False

    def prepare(self) -> None:
        # As in a worker (see child._worker_entry): import what the fork server
        # preloads, then have the collector, run after every pass, skip what
        # already exists, so that both modes time alike.
        import_modules(SERVER_PRELOAD)
        steady_malloc()  # the run's allocator (the sweep set it in the environment), as in a worker
        gc.freeze()
        self._frozen = True

    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        if interleavable(cases):
            yield from _together(cases, run_unit_in_process)
            return
        for case in cases:
            yield CaseStarted(case)
            started, t0 = time.time(), time.perf_counter()
            outcome: Outcome = run_in_process(case)
            outcome.started, outcome.wall_s = started, time.perf_counter() - t0
            outcome.placement = local_placement(case.device)
            yield outcome

    def close(self, interrupted: bool = False) -> None:
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    @property
    def workers_started(self) -> int:
        return 0

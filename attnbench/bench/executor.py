"""The executor seam: where the sweep's work units run.

The sweep decides *what* runs and in which order (a list of work units, each
a list of cases run in order by one worker) and records every outcome; an
executor decides *where*. It runs the cases it is handed and yields, per
case, ``CaseStarted`` then the ``Outcome``; it never writes results.

Two executors today: ``LocalPoolExecutor`` (a reusable worker process that is
replaced when a case crashes, runs out of memory or times out) and
``InProcessExecutor`` (``--in-process``: in the sweep's own process, for
debugging). A pool per device, shards or a cluster fill the same seam.
"""

from __future__ import annotations

import gc
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from attnbench.bench.child import SERVER_PRELOAD, WorkerPool, import_modules, run_in_process
from attnbench.bench.messages import CaseStarted, Event, Outcome
from attnbench.model import Case


@dataclass(frozen=True)
class WorkUnit:
    """Cases one worker runs in order, one after the other."""

    cases: tuple[Case, ...]


class Executor(ABC):
    """Runs cases and hands back their outcomes, in the order it ran them."""

    in_process: bool = False

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Called once there is work: start what takes long (a fork server)."""

    @abstractmethod
    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        """Run ``cases`` in order; per case yield ``CaseStarted``, then its ``Outcome``."""

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

    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        for case in cases:
            yield CaseStarted(case)
            started, t0 = time.time(), time.perf_counter()
            outcome = self.pool.run(case, case.limits.case_timeout_s)
            outcome.started, outcome.wall_s = started, time.perf_counter() - t0
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
        gc.freeze()
        self._frozen = True

    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        for case in cases:
            yield CaseStarted(case)
            started, t0 = time.time(), time.perf_counter()
            outcome: Outcome = run_in_process(case)
            outcome.started, outcome.wall_s = started, time.perf_counter() - t0
            yield outcome

    def close(self, interrupted: bool = False) -> None:
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    @property
    def workers_started(self) -> int:
        return 0

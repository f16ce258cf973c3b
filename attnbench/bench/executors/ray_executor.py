"""A Ray cluster: ``attnbench run SUITE --executor ray [--address auto|HOST:PORT]``.

Each work unit (a setting group) is one Ray task: ``num_gpus=1`` on CUDA, the
whole of the largest node's CPUs on CPU, so a unit never shares its device.
Inside the task the unit's cases run through the same worker-process pool as
a local run (``child.WorkerPool``), so a case that crashes, hangs or runs out
of memory is ``crashed``, ``timeout`` or ``oom`` exactly as it is locally, and
a unit that can be is measured in turns (``bench.interleave``), as locally.
The task streams each case's outcome back as it ends (in turns: all at the
end of the unit; a streaming generator read with ``ray.wait``), and only the
driver writes the run directory.

Beyond a case's own failures, Ray's worker itself may die (a node lost, Ray's
memory monitor): the rest of the unit is sent again once, one case after
another (so that a second death has one case to blame); a case in flight
during a second death is recorded ``crashed`` (``oom`` when Ray's memory
monitor killed it), and cases run again say so in ``retry``. A task that
reports nothing for its cases' timeouts plus a start-up allowance is
cancelled: one case after another, that case is ``timeout``; in turns, the
unit is sent again one case after another. Ray is optional:
``pip install "attnbench[ray]"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.bench.executors.base import Executor, WorkUnit, interleavable
from attnbench.bench.placement import cpu_model, host_name
from attnbench.bench.worker.messages import CaseStarted, Event, Outcome
from attnbench.bench.worker.process import WORKER_READY_TIMEOUT_S, WorkerPool
from attnbench.errors import AttnbenchError
from attnbench.model import Case, Status

RAY_MISSING = ('--executor ray needs Ray, which is not installed here: pip install "attnbench[ray]" '
               '(or pip install ray)')
#: Added to a case's timeout before the driver gives up on a silent task: the
#: worker pool enforces the timeout itself; this covers a fresh worker's imports.
SILENCE_ALLOWANCE_S = WORKER_READY_TIMEOUT_S + 60.0
#: The Ray worker process running a unit, in its case workers' environment
#: (tests kill it to play a lost node).
RAY_TASK_PID_ENV = "ATTNBENCH_RAY_TASK_PID"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AttnbenchError(RAY_MISSING) from None
    return ray


# --- inside the Ray task ------------------------------------------------------------

# One pool per Ray worker process and set of modules, reused by the units it
# runs, and the round of the last unit each ran (a new round: a fresh worker).
_POOLS: dict[tuple[str, ...], WorkerPool] = {}
_POOL_ROUNDS: dict[tuple[str, ...], int] = {}


def run_unit_task(cases: list[dict[str, Any]], preload: list[str], paths: list[str],
                  round_: int = 0, together: bool = False) -> Iterator[Any]:
    """The body of a unit's Ray task: first where it runs (a dict), then each
    case's ``Outcome``, in order; ``together``: the cases sampled in turns."""
    import ray

    os.environ[RAY_TASK_PID_ENV] = str(os.getpid())
    for path in reversed(paths):  # where the driver found the suite's own variant modules
        if path not in sys.path:
            sys.path.insert(0, path)
    gpus = [str(g) for g in ray.get_gpu_ids()]
    pinned = {"CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]} if gpus else {}
    pool = _POOLS.setdefault(tuple(preload), WorkerPool(preload))
    if pool.environ != pinned:  # Ray gave this process another GPU: its worker must not keep the old one
        pool.kill()
        pool.environ = pinned
    if _POOL_ROUNDS.setdefault(tuple(preload), round_) != round_:
        pool.close()  # each visit of a case in another process, as a local sweep does
        _POOL_ROUNDS[tuple(preload)] = round_
    placement = {"host": host_name(), "worker_device": f"cuda:{gpus[0]}" if gpus else "cpu",
                 "device_model": None if gpus else cpu_model(), "ray_node": ray.get_runtime_context().get_node_id()}
    yield placement
    unit = [Case.from_dict(data) for data in cases]
    # The task's GPU is the only one its worker sees.
    runnable = [dataclasses.replace(c, device="cuda") if c.device.startswith("cuda") else c for c in unit]
    if together:
        for case, outcome in zip(unit, pool.run_unit(runnable), strict=True):
            outcome.case = case
            yield outcome
        return
    for case, one in zip(unit, runnable, strict=True):
        started, t0 = time.time(), time.perf_counter()
        outcome = pool.run(one, case.limits.case_timeout_s)
        outcome.case, outcome.started, outcome.wall_s = case, started, time.perf_counter() - t0
        yield outcome


def calibrate_task(device: str, dtype: str) -> dict[str, Any]:
    """A Ray task: calibrate the device a unit's task gets, in a child process
    (the Ray worker, which runs units next, must not hold a CUDA context)."""
    import ray

    from attnbench.bench.worker.process import calibrate_in_child

    out = calibrate_in_child("cuda" if device.startswith("cuda") else device, dtype)
    gpus = [str(g) for g in ray.get_gpu_ids()]
    return {**out, "host": host_name(), "worker_device": f"cuda:{gpus[0]}" if gpus else device}


def _module_paths(modules: list[str]) -> list[str]:
    """The sys.path entries the suite's own variant modules were found under."""
    paths = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin).resolve()
        for entry in sys.path:
            root = Path(entry or ".").resolve()
            if root in origin.parents and str(root) not in paths:
                paths.append(str(root))
                break
    return paths


# --- the driver -------------------------------------------------------------------------

@dataclass
class _Flight:
    """A unit's task: the cases it has not reported yet, in order."""

    cases: list[Case]
    round: int = 0
    retry: dict[str, Any] | None = None  # set when these cases are sent again after a worker died
    placement: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None  # None until the task starts (it may wait for a free device)
    together: bool = False  # sampled in turns: the outcomes come at the end, and no case is alone in flight

    def allowed_s(self) -> float:
        """How long the task may stay silent: the case in flight's timeout, in
        turns every unfinished case's (the worker pool times each case out
        itself), plus a fresh worker's start-up."""
        cases = self.cases if self.together else self.cases[:1]
        return sum(c.limits.case_timeout_s for c in cases) + SILENCE_ALLOWANCE_S


class RayExecutor(Executor):
    distributed = True

    def __init__(self, preload: list[str], address: str | None = None, device_kind: str = "cpu") -> None:
        if address is None:
            # A cluster of our own, for this run only: listen on loopback alone
            # (Ray reads this when imported; it otherwise binds every interface).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = self._ray = import_ray()
        self.preload = list(preload)
        self.paths = _module_paths(self.preload)
        self.address = address
        self._owns = False
        t0 = time.perf_counter()
        if not ray.is_initialized():
            try:
                if address is None:
                    ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
                else:
                    _check_reachable(address)
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise AttnbenchError(f"--executor ray: could not start or reach {where}: {exc}") from None
            self._owns = True
        self.start_s = time.perf_counter() - t0
        self.slots, options = self._task_shape(device_kind)
        self.task_options = options
        self._remote = ray.remote(run_unit_task).options(num_returns="streaming", max_retries=0, **options)
        self._flights: dict[Any, _Flight] = {}
        self._retried: set[tuple[str, int]] = set()  # visits sent again once already

    def _task_shape(self, device_kind: str) -> tuple[int, dict[str, Any]]:
        """(units at once, the resources of one unit's task)."""
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        resources = [n.get("Resources", {}) for n in nodes]
        if device_kind == "cuda":
            gpus = [int(r.get("GPU", 0)) for r in resources]
            if not sum(gpus):
                raise AttnbenchError("--executor ray: the suite runs on CUDA and the Ray cluster has no GPUs "
                                     f"({len(nodes)} node(s))")
            # A GPU's task gets its node's CPUs shared among the node's GPUs.
            cpus = min(int(r.get("CPU", 1)) // g for r, g in zip(resources, gpus, strict=True) if g)
            return sum(gpus), {"num_gpus": 1, "num_cpus": max(1, cpus)}
        cpus = [int(r.get("CPU", 0)) for r in resources]
        largest = max(cpus, default=0)
        if not largest:
            raise AttnbenchError("--executor ray: the Ray cluster has no CPUs")
        # One CPU unit per node: parallel CPU cases would measure each other.
        return sum(1 for c in cpus if c == largest), {"num_cpus": largest}

    def describe(self) -> dict[str, Any]:
        return {"kind": "ray", "address": self.address, "ray": self._ray.__version__, "slots": self.slots,
                "task": self.task_options, "start_s": round(self.start_s, 2)}

    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        self.submit(WorkUnit(tuple(cases)))
        while self.in_flight:
            yield from self.poll(0.1)

    def calibrate(self, device: str, dtype: str) -> dict[str, Any]:
        """On the cluster, in a task shaped like a unit's (so on the kind of device the units get)."""
        task = self._ray.remote(calibrate_task).options(max_retries=0, **self.task_options)
        try:
            with signals_pass_through():
                return self._ray.get(task.remote(device, dtype))
        except self._ray.exceptions.RayError as exc:
            return {"device": device, "dtype": dtype, "error": f"the calibration task failed: {_first_line(exc)}"}

    def submit(self, unit: WorkUnit) -> None:
        self._launch(list(unit.cases), unit.round, together=interleavable(unit.cases))

    def _launch(self, cases: list[Case], round_: int = 0, retry: dict[str, Any] | None = None,
                together: bool = False) -> None:
        generator = self._remote.remote([c.to_dict() for c in cases], self.preload, self.paths, round_, together)
        self._flights[generator] = _Flight(cases, round_, retry, together=together)

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def poll(self, timeout_s: float) -> Iterator[Event]:
        if not self._flights:
            return
        yield from self._silent_tasks()
        pending = list(self._flights)
        with signals_pass_through():
            ready, rest = self._ray.wait(pending, num_returns=1, timeout=timeout_s)
            if ready and rest:  # whatever else is ready too, without waiting
                ready += self._ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        for generator in ready:
            yield from self._advance(generator)

    def _advance(self, generator: Any) -> Iterator[Event]:
        ray, flight = self._ray, self._flights[generator]
        try:
            with signals_pass_through():
                ref = next(generator)
        except StopIteration:
            del self._flights[generator]
            if flight.cases:
                yield from self._worker_lost(flight, "the Ray task ended before reporting every case")
            return
        try:
            with signals_pass_through():
                item = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            del self._flights[generator]
            return
        except ray.exceptions.RayTaskError as exc:  # our own code failed in the task: the same everywhere
            del self._flights[generator]
            yield from self._all_failed(flight, Status.ERROR, f"the Ray task failed: {_first_line(exc)}")
            return
        except ray.exceptions.RayError as exc:
            del self._flights[generator]
            oom = isinstance(exc, ray.exceptions.OutOfMemoryError)
            yield from self._worker_lost(flight, f"the Ray worker died ({type(exc).__name__}: {_first_line(exc)})",
                                         Status.OOM if oom else Status.CRASHED)
            return
        if isinstance(item, dict):  # the task has started: where it runs
            flight.placement = item
        else:
            case = flight.cases.pop(0)
            outcome: Outcome = item
            outcome.placement = self._placement(flight)
            yield CaseStarted(case)
            yield outcome
        flight.deadline = time.monotonic() + flight.allowed_s() if flight.cases else None

    def _placement(self, flight: _Flight) -> dict[str, Any]:
        placement = dict(flight.placement)
        if flight.retry:
            placement["retry"] = flight.retry
        return placement

    def _worker_lost(self, flight: _Flight, reason: str, status: str = Status.CRASHED) -> Iterator[Event]:
        """The task's worker died under ``flight``: send its cases again once;
        a case in flight during a second death keeps ``status``."""
        if flight.together:  # no one case to blame: every case again, one after another
            self._again_one_by_one(flight, reason)
            return
        case = flight.cases[0]
        if (case.case_id, case.round) not in self._retried:
            self._retried.add((case.case_id, case.round))
            self._launch(flight.cases, flight.round, {"attempt": 2, "after": reason})
            return
        yield CaseStarted(case)
        yield Outcome(case=case, status=status, error=f"{reason}, again after a retry",
                      placement=self._placement(flight))
        if flight.cases[1:]:
            self._launch(flight.cases[1:], flight.round, flight.retry)

    def _again_one_by_one(self, flight: _Flight, reason: str) -> None:
        """Send a unit that was measured in turns again, its cases one after
        another, each marked as sent again once."""
        self._retried.update((c.case_id, c.round) for c in flight.cases)
        self._launch(flight.cases, flight.round, {"attempt": 2, "after": reason})

    def _all_failed(self, flight: _Flight, status: str, error: str) -> Iterator[Event]:
        for case in flight.cases:
            yield CaseStarted(case)
            yield Outcome(case=case, status=status, error=error, placement=self._placement(flight))

    def _silent_tasks(self) -> Iterator[Event]:
        """Cancel a task silent past its case's timeout and allowance: that case is ``timeout``."""
        now = time.monotonic()
        for generator, flight in list(self._flights.items()):
            if flight.deadline is None or now < flight.deadline:
                continue
            self._ray.cancel(generator, force=True)
            del self._flights[generator]
            case, allowed = flight.cases[0], flight.allowed_s()
            if flight.together:
                self._again_one_by_one(flight, f"the Ray task reported nothing for {allowed:g} s")
                continue
            yield CaseStarted(case)
            yield Outcome(case=case, status=Status.TIMEOUT, placement=self._placement(flight),
                          error=f"the Ray task reported nothing for {allowed:g} s (limits.case_timeout_s plus "
                                "a start-up allowance); it was cancelled")
            if flight.cases[1:]:
                self._launch(flight.cases[1:], flight.round, flight.retry)

    def close(self, interrupted: bool = False) -> None:
        for generator in list(self._flights):
            try:
                self._ray.cancel(generator, force=True)
            except Exception:  # noqa: BLE001 - the task may have ended meanwhile
                pass
        self._flights.clear()
        if self._owns:
            self._ray.shutdown()
            self._owns = False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """HOST:PORT must accept a connection: Ray itself keeps retrying a wrong
    address for minutes before it gives up."""
    host, _, port = address.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return  # auto: Ray looks for a cluster on this machine and says at once if there is none
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise AttnbenchError(f"--address {address}: nothing answers there ({exc.strerror or exc}); give the "
                             "head node's GCS address (ray start --head prints it) or auto on a cluster node") \
            from None


@contextlib.contextmanager
def signals_pass_through() -> Iterator[None]:
    """A signal handler that raises (the sweep's Ctrl-C) while Ray's compiled
    code runs comes out as a SystemError wrapping it: raise the interrupt itself."""
    try:
        yield
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None
        raise


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]

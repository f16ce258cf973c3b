"""The worker processes: how a worker starts, what it runs, and the pool that
keeps one alive.

A worker that raises reports ``error``; one that dies of a signal is
``crashed`` (or ``oom`` when the kernel's OOM killer sent SIGKILL); one past
``limits.case_timeout_s`` is killed and ``timeout``; each is replaced by a
fresh worker. A case's start-up is not counted in its timeout. With
``limits.memory_limit_mib`` an allocation past the limit fails inside the
worker and the case is ``oom`` (see ``worker_setup.memory_limit``).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from attnbench.bench.worker.messages import Done, Failure, Outcome, PassResult, Ready
from attnbench.bench.worker.setup import (
    die_with_parent,
    exit_with_parent,
    memory_limit,
    steady_malloc,
    take_cpu_share,
)
from attnbench.errors import AttnbenchError
from attnbench.model import Case, Status

POLL_S = 0.1

# Workers are forked from a fork server that has imported torch and attnbench
# once (``multiprocessing``'s "forkserver" start method), so a worker starts,
# and is replaced after a crash or a timeout, in a fraction of a second
# instead of the seconds a fresh interpreter takes to import torch. The fork
# server itself never runs a tensor operation or touches CUDA, so forking it
# is safe. Where there is no fork server (Windows, macOS by choice), or with
# ATTNBENCH_START_METHOD=spawn, each worker is a fresh interpreter.

START_METHOD_ENV = "ATTNBENCH_START_METHOD"
WORKER_READY_TIMEOUT_S = 300.0  # a worker that cannot import torch in this long is broken
# torch._inductor is what the CPU memory profiler's first use imports (seconds
# of sympy and friends); importing it starts no thread, so it is preloaded too.
SERVER_PRELOAD = ["attnbench.bench.worker.measure", "torch._inductor.config"]
# Imported by the fork server before SERVER_PRELOAD: it ignores Ctrl-C from then on,
# not only after the seconds of importing torch (never imported by the sweep itself).
IGNORE_INTERRUPT = "attnbench.bench.worker.ignore_interrupt"


def _start_method() -> str:
    method = os.environ.get(START_METHOD_ENV, "").strip()
    if method:
        if method not in mp.get_all_start_methods():
            raise AttnbenchError(f"{START_METHOD_ENV}={method!r}: this platform offers "
                                 f"{', '.join(mp.get_all_start_methods())}")
        return method
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _ensure_fork_server(ctx: Any) -> None:
    """Start the fork server (once per process). It imports torch with
    PYTORCH_NVML_BASED_CUDA_CHECK=1, so that a module calling
    torch.cuda.is_available() at import time does not initialise CUDA in it
    (a forked child could then not use CUDA); workers get the caller's
    environment back (see ``_worker_entry``)."""
    from multiprocessing import forkserver

    ctx.set_forkserver_preload([IGNORE_INTERRUPT, *SERVER_PRELOAD])
    key, saved = "PYTORCH_NVML_BASED_CUDA_CHECK", os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ[key] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _worker_main(conn: Any, init_error: str | None = None, current: Any = None) -> None:
    """Loop: receive a case (or a unit: a list of cases), run it, stream its
    messages back (a unit's as ``(index, message)``). While a unit runs,
    ``current`` holds the index of the case at work."""
    from attnbench.bench.worker.measure import classify, run_case, short_error

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        unit = isinstance(message, list)
        if init_error:
            conn.send((-1, Failure(status=Status.ERROR, error=init_error)) if unit
                      else Failure(status=Status.ERROR, error=init_error))
        elif unit:
            from attnbench.bench.worker.interleave import run_unit

            def at(index: int) -> None:
                current.value = index

            try:
                run_unit([Case.from_dict(m) for m in message], lambda i, m: conn.send((i, m)), at)
            except BaseException as exc:  # noqa: BLE001 - the cases not finished share it
                conn.send((-1, Failure(status=classify(exc), error=short_error(exc))))
            finally:
                at(-1)  # between units no case is at work
        else:
            case = Case.from_dict(message)
            try:
                with memory_limit(case):
                    run_case(case, conn.send)
            except BaseException as exc:  # noqa: BLE001 - report, keep serving
                conn.send(Failure(status=classify(exc), error=short_error(exc)))
        conn.send(Done())


def import_modules(modules: list[str]) -> None:
    import importlib

    for name in modules:
        importlib.import_module(name)


def _worker_entry(conn: Any, modules: list[str], environ: dict[str, str] | None = None,
                  alive: Any = None, current: Any = None) -> None:
    # The parent decides what Ctrl-C and SIGTERM mean (it kills this worker);
    # the terminal sends Ctrl-C to the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    if alive is not None:
        exit_with_parent(alive)
    if environ is not None:  # a forked worker has the fork server's environment
        os.environ.clear()
        os.environ.update(environ)
    take_cpu_share()
    steady_malloc()
    try:  # stdout carries the parent's results: a variant's prints go to stderr
        sys.stdout.flush()
        os.dup2(2, 1)
    except (OSError, ValueError):
        pass
    init_error = None
    try:
        import_modules(modules)
    except BaseException as exc:  # noqa: BLE001 - every case then reports it
        init_error = (f"the worker could not import the variants' modules "
                      f"({', '.join(modules)}): {type(exc).__name__}: {exc}")[:500]
    # What is imported now lives as long as the worker: keep the collector
    # (run after every pass) from scanning torch's and sympy's objects each time.
    gc.freeze()
    conn.send(Ready(pid=os.getpid()))
    _worker_main(conn, init_error, current)


class WorkerPool:
    """One live worker, reused across cases and replaced when it dies."""

    def __init__(self, preload: list[str] | None = None, environ: dict[str, str] | None = None) -> None:
        self.preload = list(preload or [])
        self.environ = dict(environ or {})  # set in every worker's environment (a pinned GPU, a CPU share)
        self.process: Any = None
        self.conn: Any = None
        self._alive: Any = None  # the worker's liveness pipe: closing it ends the worker
        self.pid: int | None = None
        self.ready = False
        self.started = 0  # workers started so far
        self.stopping = False  # set by an executor that kills the worker to stop: nothing is run again
        self._ctx = mp.get_context(_start_method())
        self._current: Any = None  # shared with the worker: the index of a unit's case at work

    def prestart(self) -> None:
        """Start the fork server (without waiting for it): its imports then
        overlap with whatever the caller does before the first case."""
        if self._ctx.get_start_method() == "forkserver":
            _ensure_fork_server(self._ctx)

    def start(self) -> None:
        """Start a worker now (it imports in the background) unless one is alive."""
        if self.process is None or not self.process.is_alive():
            self.kill()
            self._start()

    def _start(self) -> None:
        if self._ctx.get_start_method() == "forkserver":
            _ensure_fork_server(self._ctx)
        parent, child = self._ctx.Pipe()
        alive_r, alive_w = self._ctx.Pipe(duplex=False)  # the worker exits when alive_w closes
        self._current = self._ctx.RawValue("i", -1)
        # Not a daemon: a daemonic process may not have children, and
        # torch.compile starts compiler workers. close()/kill() end it.
        process = self._ctx.Process(target=_worker_entry,
                                    args=(child, self.preload, {**os.environ, **self.environ}, alive_r, self._current),
                                    daemon=False, name="attnbench-worker")
        try:
            # Blocks while the fork server still imports torch; a Ctrl-C here
            # leaves no process to join, and a worker forked later exits as
            # alive_w is closed (see worker_setup.exit_with_parent).
            process.start()
        except BaseException:
            for end in (parent, child, alive_r, alive_w):
                end.close()
            raise
        child.close()
        alive_r.close()
        self.process, self.conn, self._alive = process, parent, alive_w
        self.ready = False
        self.pid = self.process.pid
        self.started += 1

    def close(self) -> None:
        if self.process is None:
            return
        try:
            if self.process.is_alive():
                self.conn.send(None)
                self.process.join(2)
        except (OSError, ValueError):
            pass
        self.kill()

    def kill(self) -> None:
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(5)
        for end in (self.conn, self._alive):
            if end is not None:
                end.close()
        self.process = self.conn = self._alive = None
        self.ready = False

    def _wait_ready(self, outcome: Outcome) -> bool:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while True:
            try:
                if self.conn.poll(POLL_S):
                    message = self.conn.recv()
                    if isinstance(message, Ready):
                        self.ready = True
                        self.pid = message.pid
                        return True
                    continue
            except (EOFError, OSError):
                pass
            if not self.process.is_alive():
                self._died(outcome)
                outcome.error = f"while starting, {outcome.error}"
                return False
            if time.monotonic() > deadline:
                self.kill()
                outcome.status = Status.CRASHED
                outcome.error = f"the worker did not start within {WORKER_READY_TIMEOUT_S:g} s"
                return False

    def _hand_over(self, payload: Any, outcome: Outcome) -> bool:
        """Send ``payload`` to the live worker (starting one if needed); False,
        with ``outcome``'s status and error set, when no worker would take it."""
        for attempt in range(2):
            self.start()
            if not self.ready and not self._wait_ready(outcome):
                return False
            try:
                self.conn.send(payload)
                return True
            except (OSError, ValueError):  # the idle worker died since the last case: start another
                self.kill()
                if attempt:
                    outcome.status, outcome.error = Status.CRASHED, "could not hand the case to a worker"
        return False

    def run(self, case: Case, timeout_s: float) -> Outcome:
        """Run ``case`` in the live worker (starting one if needed); the worker's
        messages, or how it died or hung."""
        outcome = Outcome(case=case)
        if not self._hand_over(case.to_dict(), outcome):
            return outcome
        outcome.worker_pid = self.pid
        # The deadline starts once the worker has the case: start-up is not the case's time.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ready = self.conn.poll(POLL_S)
            except (EOFError, OSError):
                ready = False
            if ready:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return self._died(outcome)
                if isinstance(message, Done):
                    return outcome
                outcome.messages.append(message)
                continue
            if not self.process.is_alive():
                return self._died(outcome)
            if time.monotonic() > deadline:
                self.kill()
                outcome.status = Status.TIMEOUT
                outcome.error = f"the case ran past limits.case_timeout_s ({timeout_s:g} s); its worker was killed"
                return outcome

    def run_unit(self, cases: Sequence[Case]) -> list[Outcome]:
        """Run ``cases`` together (``bench.interleave``: sampled in turns) in the
        live worker; their outcomes, each with its start and its share of the
        unit's time. Each case has its own ``case_timeout_s``, counted while
        the worker works on it. When the worker hangs or dies, the case at
        work is timed out or crashed and the others run again, one at a time
        (a worker killed by SIGKILL, most likely for memory that the cases
        needed together, has every unfinished case run again alone)."""
        started = time.time()
        outcomes = [Outcome(case=case, started=started) for case in cases]
        refused = Outcome(case=cases[0])
        if not self._hand_over([case.to_dict() for case in cases], refused):
            for outcome in outcomes:
                outcome.status, outcome.error = refused.status, refused.error
            return outcomes
        spent, last = [0.0] * len(cases), time.monotonic()
        for outcome in outcomes:
            outcome.worker_pid = self.pid
        while True:
            try:
                ready = self.conn.poll(POLL_S)
            except (EOFError, OSError):
                ready = False
            now, at = time.monotonic(), self._current.value
            if 0 <= at < len(cases):
                spent[at] += now - last
            last = now
            if ready:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return self._unit_lost(outcomes, spent, at, self._died(Outcome(case=cases[max(at, 0)])))
                if isinstance(message, Done):
                    break
                index, message = message
                for i in ([index] if index >= 0 else
                          [i for i, outcome in enumerate(outcomes) if not _finished(outcome)]):
                    outcomes[i].messages.append(message)
                continue
            if not self.process.is_alive():
                return self._unit_lost(outcomes, spent, at, self._died(Outcome(case=cases[max(at, 0)])))
            late = next((i for i, case in enumerate(cases) if spent[i] > case.limits.case_timeout_s), None)
            if late is not None:
                self.kill()
                limit = cases[late].limits.case_timeout_s
                fate = Outcome(case=cases[late], status=Status.TIMEOUT,
                               error=f"the case ran past limits.case_timeout_s ({limit:g} s, its own share of its "
                                     "unit's time); its worker was killed")
                return self._unit_lost(outcomes, spent, late, fate)
        for outcome, seconds in zip(outcomes, spent, strict=True):
            outcome.wall_s = seconds
        return outcomes

    def _unit_lost(self, outcomes: list[Outcome], spent: list[float], culprit: int, fate: Outcome) -> list[Outcome]:
        """The worker died or hung under case ``culprit`` (-1: none had started):
        it takes ``fate``; every other case not finished runs again alone."""
        alone = fate.status == Status.OOM  # the cases' graphs together, maybe: none is to blame yet
        for i, outcome in enumerate(outcomes):
            outcome.wall_s = spent[i]
            if self.stopping:  # killed to stop the sweep: its executor drops these outcomes
                continue
            if i == culprit and not alone:
                outcome.status, outcome.error = fate.status, fate.error
            elif not _finished(outcome):
                t0 = time.perf_counter()
                again = self.run(outcome.case, outcome.case.limits.case_timeout_s)
                again.started, again.wall_s = time.time(), time.perf_counter() - t0
                outcomes[i] = again
        return outcomes

    def _died(self, outcome: Outcome) -> Outcome:
        self.process.join(5)
        code = self.process.exitcode
        self.kill()
        if code is not None and code < 0 and -code == signal.SIGKILL:
            outcome.status = Status.OOM
            outcome.error = "the worker was killed by SIGKILL, most likely by the kernel's out-of-memory killer"
        else:
            try:
                name = signal.Signals(-code).name if code is not None and code < 0 else None
            except ValueError:
                name = None
            outcome.status = Status.CRASHED
            outcome.error = (f"the worker died of {name}" if name else f"the worker exited with code {code}")
        return outcome


def _finished(outcome: Outcome) -> bool:
    """Whether the worker reported all of the case: a failure to start, or every pass."""
    return any(isinstance(m, Failure) for m in outcome.messages) or \
        sum(isinstance(m, PassResult) for m in outcome.messages) >= len(outcome.case.passes)


def run_in_process(case: Case) -> Outcome:
    """Run ``case`` in this process (``--in-process``): no timeout, and a crash ends the sweep."""
    from attnbench.bench.worker.measure import run_case

    outcome = Outcome(case=case, worker_pid=os.getpid())
    with memory_limit(case):
        run_case(case, outcome.messages.append)
    return outcome


def run_unit_in_process(cases: Sequence[Case]) -> list[Outcome]:
    """``WorkerPool.run_unit`` in this process (``--in-process``): no timeout."""
    from attnbench.bench.worker.interleave import run_unit

    started, pid = time.time(), os.getpid()
    outcomes = [Outcome(case=case, worker_pid=pid, started=started) for case in cases]
    current, last = -1, time.perf_counter()

    def at(index: int) -> None:  # the time since the last call is the case at work's
        nonlocal current, last
        now = time.perf_counter()
        if current >= 0:
            outcomes[current].wall_s += now - last
        current, last = index, now

    run_unit(cases, lambda i, message: outcomes[i].messages.append(message), at)
    at(-1)
    return outcomes


CALIBRATION_TIMEOUT_S = 120.0


def _calibrate_entry(conn: Any, device: str, dtype: str, environ: dict[str, str]) -> None:
    from attnbench.bench.calibration import calibrate

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    os.environ.clear()
    os.environ.update(environ)
    malloc = steady_malloc()  # as in the workers whose rates it calibrates
    try:
        result = {**calibrate(device, dtype), "malloc": malloc}
    except BaseException as exc:  # noqa: BLE001 - reported, the sweep goes on
        result = {"device": device, "dtype": dtype, "error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        conn.send(result)
    except OSError:  # the sweep was interrupted while this child was forked: nobody is listening
        pass


def calibrate_in_child(device: str, dtype: str) -> dict[str, Any]:
    """``bench.calibration.calibrate`` in a worker-like child process (forked
    from the fork server where there is one), so that the sweep's process never
    initialises CUDA; ``{"error": ...}`` when the child fails or hangs."""
    ctx = mp.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        _ensure_fork_server(ctx)
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_calibrate_entry, args=(child, device, dtype, dict(os.environ)), daemon=True,
                          name="attnbench-calibration")
    try:
        process.start()  # blocks while the fork server still imports torch
    except BaseException:  # a Ctrl-C here leaves no process to join
        parent.close()
        child.close()
        raise
    child.close()
    try:
        if parent.poll(CALIBRATION_TIMEOUT_S):
            return parent.recv()
        return {"device": device, "dtype": dtype,
                "error": f"the calibration did not finish within {CALIBRATION_TIMEOUT_S:g} s"}
    except (EOFError, OSError):
        return {"device": device, "dtype": dtype, "error": f"the calibration process died ({process.exitcode})"}
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent.close()

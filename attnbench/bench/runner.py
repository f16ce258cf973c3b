"""The sweep runner: one case at a time, each in a reusable worker process.

The runner only dispatches and records. A worker that raises reports
``error``; one that dies of a signal is ``crashed`` (or ``oom`` when the
kernel's OOM killer sent SIGKILL); one past ``limits.case_timeout_s`` is
killed and ``timeout``; each is replaced by a fresh worker (forked from a
fork server that has imported torch once, so a replacement takes a fraction
of a second). A case's start-up is not counted in its timeout. With
``limits.memory_limit_mib`` an allocation past the limit fails inside the
worker and the case is ``oom`` (see ``memory_limit``).

Every finished case is appended to cases.jsonl at once, so an interrupted
sweep loses only the case in flight and ``--resume`` picks up the rest.
SIGINT/SIGTERM kill the case in flight, never interrupt the recording of a
finished one, and leave results.csv and run.json written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import math
import multiprocessing as mp
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.bench.shard import Shard, shard_cases
from attnbench.errors import AttnbenchError, ResultsError
from attnbench.results import (
    RECORD_SCHEMA,
    append_record,
    load_run,
    records_frame,
    rewrite_records,
    worst_status,
    write_atomic,
    write_csv,
)
from attnbench.suite import SERIES_FIELDS, Case, Suite

POLL_S = 0.1
MIB = float(1 << 20)


# --- the worker process --------------------------------------------------------
#
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
_SERVER_PRELOAD = ["attnbench.bench.worker", "torch._inductor.config"]


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

    ctx.set_forkserver_preload(_SERVER_PRELOAD)
    key, saved = "PYTORCH_NVML_BASED_CUDA_CHECK", os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ[key] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker if its parent dies (a runner
    killed with SIGKILL must not leave a worker computing for hours)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _warm_thread_pool() -> None:
    """Start the intra-op threads (and their malloc arenas) before a memory
    limit is applied, so that the limit bites on the case's tensors, not on
    the creation of a thread."""
    global _threads_warm
    if _threads_warm:
        return
    import torch

    a = torch.ones(1 << 18)
    a.add_(1.0)
    (torch.ones(128, 128) @ torch.ones(128, 128)).sum()
    _threads_warm = True


_threads_warm = False


@contextlib.contextmanager
def memory_limit(case: Case) -> Iterator[None]:
    """Apply ``limits.memory_limit_mib`` to the current process for one case
    (see ``attnbench.suite.Limits``): RLIMIT_AS on CPU, the caching
    allocator's memory fraction on CUDA. A no-op without a limit."""
    limit = case.limits.memory_limit_mib
    if not limit:
        yield
        return
    import torch

    device = case.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        try:
            dev = torch.device(device)
            total = torch.cuda.get_device_properties(dev).total_memory
            fraction = min(1.0, (torch.cuda.memory_reserved(dev) + limit * MIB) / total)
            torch.cuda.set_per_process_memory_fraction(fraction, dev)
        except Exception:  # noqa: BLE001 - no such device: run_case reports it
            yield
            return
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, dev)
        return
    try:
        import resource

        import psutil
    except ImportError:  # not a POSIX system: no address-space limit
        yield
        return
    _warm_thread_pool()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = psutil.Process().memory_info().vms + int(limit * MIB)
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            cap = min(cap, bound)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _worker_main(conn: Any, init_error: str | None = None) -> None:
    """Loop: receive a case, run it, stream its messages back."""
    from attnbench.bench.worker import run_case

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if init_error:
            conn.send(("fail", {"status": "error", "error": init_error}))
            conn.send(("done", {}))
            continue
        case = Case.from_dict(message)
        try:
            with memory_limit(case):
                run_case(case, lambda kind, payload: conn.send((kind, payload)))
        except BaseException as exc:  # noqa: BLE001 - report, keep serving
            from attnbench.bench.worker import classify, short_error

            conn.send(("fail", {"status": classify(exc), "error": short_error(exc)}))
        conn.send(("done", {}))


def _worker_init_modules(modules: list[str]) -> None:
    import importlib

    for name in modules:
        importlib.import_module(name)


def _worker_entry(conn: Any, modules: list[str], environ: dict[str, str] | None = None) -> None:
    # The parent decides what Ctrl-C and SIGTERM mean (it kills this worker);
    # the terminal sends Ctrl-C to the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    if environ is not None:  # a forked worker has the fork server's environment
        os.environ.clear()
        os.environ.update(environ)
    try:  # stdout carries the parent's results: a variant's prints go to stderr
        sys.stdout.flush()
        os.dup2(2, 1)
    except (OSError, ValueError):
        pass
    init_error = None
    try:
        _worker_init_modules(modules)
    except BaseException as exc:  # noqa: BLE001 - every case then reports it
        init_error = (f"the worker could not import the variants' modules "
                      f"({', '.join(modules)}): {type(exc).__name__}: {exc}")[:500]
    # What is imported now lives as long as the worker: keep the collector
    # (run after every pass) from scanning torch's and sympy's objects each time.
    gc.freeze()
    conn.send(("ready", {"pid": os.getpid()}))
    _worker_main(conn, init_error)


@dataclass
class _Outcome:
    messages: list[tuple[str, dict[str, Any]]]
    status: str | None = None  # set when the worker failed outside run_case
    error: str | None = None
    worker_pid: int | None = None


class WorkerPool:
    """One live worker, reused across cases and replaced when it dies."""

    def __init__(self, preload: list[str] | None = None) -> None:
        self.preload = list(preload or [])
        self.process: Any = None
        self.conn: Any = None
        self.pid: int | None = None
        self.ready = False
        self.started = 0  # workers started so far
        self._ctx = mp.get_context(_start_method())

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
        # Not a daemon: a daemonic process may not have children, and
        # torch.compile starts compiler workers. close()/kill() end it.
        self.process = self._ctx.Process(target=_worker_entry, args=(child, self.preload, dict(os.environ)),
                                         daemon=False, name="attnbench-worker")
        self.process.start()
        child.close()
        self.conn = parent
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
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None
        self.ready = False

    def _wait_ready(self, outcome: _Outcome) -> bool:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while True:
            try:
                if self.conn.poll(POLL_S):
                    kind, payload = self.conn.recv()
                    if kind == "ready":
                        self.ready = True
                        self.pid = payload.get("pid", self.pid)
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
                outcome.status = "crashed"
                outcome.error = f"the worker did not start within {WORKER_READY_TIMEOUT_S:g} s"
                return False

    def run(self, case: Case, timeout_s: float) -> _Outcome:
        outcome = _Outcome(messages=[])
        for attempt in range(2):
            self.start()
            if not self.ready and not self._wait_ready(outcome):
                return outcome
            try:
                self.conn.send(case.to_dict())
                break
            except (OSError, ValueError):  # the idle worker died since the last case: start another
                self.kill()
                if attempt:
                    outcome.status, outcome.error = "crashed", "could not hand the case to a worker"
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
                    kind, payload = self.conn.recv()
                except (EOFError, OSError):
                    return self._died(outcome)
                if kind == "done":
                    return outcome
                outcome.messages.append((kind, payload))
                continue
            if not self.process.is_alive():
                return self._died(outcome)
            if time.monotonic() > deadline:
                self.kill()
                outcome.status = "timeout"
                outcome.error = f"the case ran past limits.case_timeout_s ({timeout_s:g} s); its worker was killed"
                return outcome

    def _died(self, outcome: _Outcome) -> _Outcome:
        self.process.join(5)
        code = self.process.exitcode
        self.kill()
        if code is not None and code < 0 and -code == signal.SIGKILL:
            outcome.status = "oom"
            outcome.error = "the worker was killed by SIGKILL, most likely by the kernel's out-of-memory killer"
        else:
            try:
                name = signal.Signals(-code).name if code is not None and code < 0 else None
            except ValueError:
                name = None
            outcome.status = "crashed"
            outcome.error = (f"the worker died of {name}" if name else f"the worker exited with code {code}")
        return outcome


def _run_in_process(case: Case) -> _Outcome:
    from attnbench.bench.worker import run_case

    outcome = _Outcome(messages=[], worker_pid=os.getpid())
    with memory_limit(case):
        run_case(case, lambda kind, payload: outcome.messages.append((kind, payload)))
    return outcome


# --- records -------------------------------------------------------------------

def make_record(case: Case, outcome: _Outcome, started: float, wall_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {"schema": RECORD_SCHEMA, "case_id": case.case_id, "case": case.to_dict(),
                              "started_at": started, "wall_s": wall_s, "worker_pid": outcome.worker_pid,
                              "passes": []}
    error = None
    for kind, payload in outcome.messages:
        if kind == "meta":
            record.update(payload)
        elif kind == "pass":
            record["passes"].append(payload)
        elif kind == "fail":
            record["status"] = payload["status"]
            error = payload["error"]
            if payload.get("traceback"):
                record["traceback"] = payload["traceback"]
    if "family" not in record:
        from attnbench.variants.registry import variant_info

        try:
            record["family"] = variant_info(case.variant).family
        except (ValueError, ImportError):
            record["family"] = None
    statuses = [p["status"] for p in record["passes"]]
    if outcome.status:  # the worker died or hung: the passes it did not finish share that fate
        statuses.append(outcome.status)
        error = outcome.error
    elif "status" in record:
        statuses.append(record["status"])
    record["status"] = worst_status(statuses)
    if error is None:
        error = next((p["error"] for p in record["passes"] if p.get("error")), None)
    record["error"] = error
    return record


def skipped_record(case: Case, reason: str) -> dict[str, Any]:
    return make_record(case, _Outcome(messages=[("fail", {"status": "skipped", "error": reason})]),
                       time.time(), 0.0)


# --- skip rules --------------------------------------------------------------------

def estimated_peak_mib(case: Case, previous: list[dict[str, Any]]) -> float | None:
    """Extrapolate the peak memory of ``case`` from finished cases of its series
    (same everything but N): the growth exponent is fitted from the last two
    points, or taken as 2 (quadratic, the worst of our variants) from one."""
    points = []
    for record in previous:
        c = record["case"]
        peaks = [p.get("peak_mem_mib") or 0.0 for p in record.get("passes", []) if p["status"] == "ok"]
        if peaks and c["seq_len"] < case.seq_len:
            points.append((c["seq_len"], max(peaks)))
    if not points:
        return None
    points.sort()
    n1, m1 = points[-1]
    exponent = 2.0
    if len(points) >= 2:
        n0, m0 = points[-2]
        if m0 > 0 and m1 > 0 and n1 > n0:
            exponent = min(max(math.log(m1 / m0) / math.log(n1 / n0), 1.0), 3.0)
    return m1 * (case.seq_len / n1) ** exponent * 1.2


def skip_reason(case: Case, done: list[dict[str, Any]]) -> str | None:
    key = case.series
    series = [r for r in done if tuple(r["case"][name] for name in SERIES_FIELDS) == key]
    for record in series:
        if record["status"] == "oom" and record["case"]["seq_len"] < case.seq_len:
            return f"skipped: N={record['case']['seq_len']} of this series ran out of memory"
    if case.device == "cpu":
        import psutil

        estimate = estimated_peak_mib(case, series)
        available = psutil.virtual_memory().available / MIB - case.limits.memory_margin_mib
        if estimate is not None and estimate > available:
            return (f"skipped: estimated peak memory {estimate:,.0f} MiB exceeds the available "
                    f"{available:,.0f} MiB (after a {case.limits.memory_margin_mib:,.0f} MiB margin)")
    return None


# --- the sweep -----------------------------------------------------------------------

@dataclass
class RunOptions:
    out_dir: Path = Path("results")
    resume: Path | None = None
    in_process: bool = False
    quiet: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    preload: list[str] = field(default_factory=list)  # modules each worker imports (custom variants)
    shard: Shard | None = None  # run only this part of the suite (--shard K/N)


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

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] not in ("ok",)]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 3 if any(r["status"] not in ("ok", "skipped") for r in self.records) else 0


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a sweep. A BaseException, like KeyboardInterrupt,
    so that no ``except Exception`` on the way (a variant's, run_case's) can
    record it as a failed case and go on."""


class _SignalGuard:
    """SIGINT and SIGTERM stop the sweep by raising ``Interrupted``, except
    inside ``deferred()`` (recording a finished case: the interrupt is raised
    once it is on disk) and after ``hold()`` (writing the final files: further
    signals are noted and ignored)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: str | None = None
        self._depth = 0
        self._holding = False
        self._previous: dict[int, Any] = {}

    def install(self) -> _SignalGuard:
        for s in self.SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread: Ctrl-C stays KeyboardInterrupt
                pass
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.pending is None:
            self.pending = signal.Signals(signum).name
        if self._depth == 0 and not self._holding:
            raise Interrupted(self.pending)

    def check(self) -> None:
        if self.pending is not None and not self._holding:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.check()

    def hold(self) -> None:
        self._holding = True


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


_COMPARABLE_CASE_KEYS = ("variant", "params", "passes", "compile")


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
            if old_timing.get(key) != new_timing.get(key):
                diffs.append(f"timing.{key}: {old_timing.get(key)!r} -> {new_timing.get(key)!r}")
    elif old_timing != new_timing:
        diffs.append(f"timing settings: {old_timing!r} -> {new_timing!r}")
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
            if before != after and (case["label"], key) not in seen:
                seen.add((case["label"], key))
                diffs.append(f"{case['label']} {key}: {before!r} -> {after!r}")
    return list(dict.fromkeys(diffs))


def prepare_run_dir(suite: Suite, options: RunOptions) -> tuple[Path, dict[str, Any], list[dict[str, Any]],
                                                                    list[str]]:
    """Create (or reopen for --resume) the results directory. Everything is
    checked before anything is written."""
    from attnbench.env import collect_environment

    if options.resume is not None:
        run = load_run(options.resume)
        diffs = _differences(run.meta, suite, run.records)
        diffs += _shard_differences(run.meta, options.shard)
        if diffs:
            raise AttnbenchError(f"{options.resume}: the suite changed since this run, so the results would "
                                 "not be comparable:\n  " + "\n  ".join(diffs)
                                 + "\nStart a new run instead (drop --resume).")
        _check_writable(run.path)
        meta = run.meta
        meta.setdefault("resumed_at", []).append(dt.datetime.now().astimezone().isoformat())
        meta["status"] = "running"
        return run.path, meta, run.records, run.warnings
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


def _write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    write_atomic(run_dir / "run.json", json.dumps(meta, indent=2, default=str) + "\n")


class _Progress:
    """A rich progress bar on stderr (case i of n, name, elapsed, remaining)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]case"), MofNCompleteColumn(), BarColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, disable=quiet, transient=False)
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, case: Case) -> None:
        self.progress.update(self.task, description=f"{case.label} N={case.seq_len} H={case.heads} "
                                                    f"{case.device} {case.dtype}")

    def finished(self, record: dict[str, Any]) -> None:
        from rich.markup import escape

        if record["status"] != "ok":
            case = record["case"]
            colour = "yellow" if record["status"] == "skipped" else "red"
            self.progress.console.log(f"[{colour}]{record['status']}[/] {escape(str(case['label']))} "
                                      f"N={case['seq_len']} H={case['heads']}: {escape(record.get('error') or '')}",
                                      markup=True)
        self.progress.advance(self.task)


def run_suite(suite: Suite, options: RunOptions) -> RunSummary:
    """Run every case of ``suite`` not already in the run directory.

    SIGINT/SIGTERM stop the case in flight (its worker is killed), then
    results.csv and run.json are written from what finished and the summary
    says ``interrupted``; ``--resume`` runs the rest."""
    pool = None if options.in_process else WorkerPool(options.preload + preload_modules(suite))
    try:
        run_dir, meta, done, warnings = prepare_run_dir(suite, options)
        _write_meta(run_dir, meta)
        jsonl = run_dir / "cases.jsonl"
        if done and warnings:
            # Drop a truncated last line now so that appends start on a fresh line.
            rewrite_records(jsonl, done)
    except BaseException:
        if pool is not None:
            pool.kill()
        raise
    done_ids = {r["case_id"] for r in done}
    all_cases = suite.cases()
    shard = run_shard(meta)
    if shard is not None:  # split the whole suite, never what is left: the parts must stay disjoint
        all_cases = shard_cases(all_cases, shard)
    cases = [c for c in all_cases if c.case_id not in done_ids]
    if pool is not None and cases:
        pool.prestart()  # the fork server imports torch while the sweep is set up
    records = list(done)
    summary = RunSummary(run_dir=run_dir, records=records, warnings=warnings, in_process=options.in_process,
                         shard=shard)
    guard = _SignalGuard().install()
    if pool is None:
        # As in a worker (see _worker_entry): import what the fork server
        # preloads, then have the collector, run after every pass, skip what
        # already exists, so that both modes time alike.
        _worker_init_modules(_SERVER_PRELOAD)
        gc.freeze()
    try:
        with _Progress(len(cases), options.quiet) as progress:
            for case in cases:
                guard.check()
                progress.start(case)
                reason = skip_reason(case, records)
                if reason:
                    record = skipped_record(case, reason)
                else:
                    started, t0 = time.time(), time.perf_counter()
                    if pool is None:
                        outcome = _run_in_process(case)
                    else:
                        outcome = pool.run(case, case.limits.case_timeout_s)
                    record = make_record(case, outcome, started, time.perf_counter() - t0)
                with guard.deferred():  # a finished case is recorded whole, whatever signal comes
                    append_record(jsonl, record)
                    records.append(record)
                    summary.ran += 1
                    progress.finished(record)
    except (Interrupted, KeyboardInterrupt):
        summary.interrupted = True
    finally:
        guard.hold()  # a second Ctrl-C must not cut the final writes short
        try:
            if pool is not None:
                summary.workers_started = pool.started
                pool.kill() if summary.interrupted else pool.close()
            write_csv(records_frame(records, run_dir.name), run_dir / "results.csv")
            meta["status"] = "interrupted" if summary.interrupted else "finished"
            meta["finished_at"] = dt.datetime.now().astimezone().isoformat()
            meta["cases_total"] = len(all_cases)
            meta["cases_done"] = len(records)
            _write_meta(run_dir, meta)
        finally:
            guard.restore()
            if pool is None:
                gc.unfreeze()
    return summary


def preload_modules(suite: Suite) -> list[str]:
    """Modules a worker must import to know the suite's variants that were
    registered outside attnbench (by a test, a script or a plugin)."""
    from attnbench.variants.registry import _VARIANTS

    modules = []
    for spec in suite.variants:
        entry = _VARIANTS.get(spec.name)
        module = getattr(entry.target, "__module__", "") if entry else ""
        if module and module != "__main__" and not module.startswith("attnbench.variants"):
            modules.append(module)
    return sorted(set(modules))


def resume_command(summary: RunSummary, suite_path: str, quick: bool = False, device: str | None = None) -> str:
    """The command that finishes an interrupted run, ready to paste."""
    parts = ["attnbench", "run", suite_path]
    if quick:
        parts.append("--quick")
    if device:
        parts += ["--device", device]
    if summary.in_process:
        parts.append("--in-process")
    if summary.shard is not None:
        parts += ["--shard", str(summary.shard)]
    parts += ["--resume", str(summary.run_dir)]
    return shlex.join(parts)

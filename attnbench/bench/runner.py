"""The sweep runner: one case at a time, each in a reusable worker process.

The runner only dispatches and records. A worker that raises reports
``error``; one that dies of a signal is ``crashed`` (or ``oom`` when the
kernel's OOM killer sent SIGKILL); one past ``limits.case_timeout_s`` is
killed and ``timeout``; each is replaced by a fresh worker. Every finished
case is appended to cases.jsonl at once, so an interrupted sweep loses only
the case in flight and ``--resume`` picks up the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import AttnbenchError, ResultsError
from attnbench.results import (
    RECORD_SCHEMA,
    append_record,
    load_run,
    records_frame,
    worst_status,
    write_atomic,
    write_csv,
)
from attnbench.suite import Case, Suite

POLL_S = 0.1
MIB = float(1 << 20)


# --- the worker process --------------------------------------------------------

def _worker_main(conn: Any) -> None:
    """Loop: receive a case, run it, stream its messages back."""
    # The parent decides what Ctrl-C means; the terminal sends it to us too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from attnbench.bench.worker import run_case

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        case = Case.from_dict(message)
        try:
            run_case(case, lambda kind, payload: conn.send((kind, payload)))
        except BaseException as exc:  # noqa: BLE001 - report, keep serving
            conn.send(("fail", {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}))
        conn.send(("done", {}))


def _worker_init_modules(modules: list[str]) -> None:
    import importlib

    for name in modules:
        importlib.import_module(name)


def _worker_entry(conn: Any, modules: list[str]) -> None:
    _worker_init_modules(modules)
    _worker_main(conn)


@dataclass
class _Outcome:
    messages: list[tuple[str, dict[str, Any]]]
    status: str | None = None  # set when the worker failed outside run_case
    error: str | None = None


class WorkerPool:
    """One live worker, reused across cases and replaced when it dies."""

    def __init__(self, preload: list[str] | None = None) -> None:
        self.preload = list(preload or [])
        self.process: Any = None
        self.conn: Any = None
        self._ctx = mp.get_context("spawn")

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self.process = self._ctx.Process(target=_worker_entry, args=(child, self.preload), daemon=True,
                                         name="attnbench-worker")
        self.process.start()
        child.close()
        self.conn = parent

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
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None

    def run(self, case: Case, timeout_s: float, on_message: Callable[[str, dict], None]) -> _Outcome:
        if self.process is None or not self.process.is_alive():
            self._start()
        outcome = _Outcome(messages=[])
        self.conn.send(case.to_dict())
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
                on_message(kind, payload)
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


def _run_in_process(case: Case, on_message: Callable[[str, dict], None]) -> _Outcome:
    from attnbench.bench.worker import run_case

    outcome = _Outcome(messages=[])

    def emit(kind: str, payload: dict) -> None:
        outcome.messages.append((kind, payload))
        on_message(kind, payload)

    run_case(case, emit)
    return outcome


# --- records -------------------------------------------------------------------

def make_record(case: Case, outcome: _Outcome, started: float, wall_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {"schema": RECORD_SCHEMA, "case_id": case.case_id, "case": case.to_dict(),
                              "started_at": started, "wall_s": wall_s, "passes": []}
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


def _series_key(case_dict: dict[str, Any]) -> tuple:
    return (case_dict["label"], case_dict["heads"], case_dict["dim"], case_dict["batch"], case_dict["dtype"],
            case_dict["device"], case_dict["causal"])


def skip_reason(case: Case, done: list[dict[str, Any]]) -> str | None:
    series = [r for r in done if _series_key(r["case"]) == _series_key(case.to_dict())]
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


@dataclass
class RunSummary:
    run_dir: Path
    records: list[dict[str, Any]]
    interrupted: bool = False
    ran: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] not in ("ok",)]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 3 if any(r["status"] not in ("ok", "skipped") for r in self.records) else 0


class Interrupted(Exception):
    """SIGINT or SIGTERM during a sweep."""


def _new_run_dir(out_dir: Path, suite_name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in suite_name)
    base = out_dir / f"{stamp}-{safe}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".attnbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot write results there ({exc.strerror or exc})") from None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    if old.get("timing") != new.get("timing"):
        diffs.append(f"timing settings changed: {old.get('timing')} -> {new.get('timing')}")
    old_v, new_v = old.get("variants", {}), new.get("variants", {})
    for label in sorted(set(old_v) & set(new_v)):
        if old_v[label] != new_v[label]:
            diffs.append(f"variant {label!r} changed: {old_v[label]} -> {new_v[label]}")
    return diffs


def prepare_run_dir(suite: Suite, options: RunOptions) -> tuple[Path, dict[str, Any], list[dict[str, Any]],
                                                                    list[str]]:
    """Create (or reopen for --resume) the results directory."""
    from attnbench.env import collect_environment

    if options.resume is not None:
        run = load_run(options.resume)
        fingerprint = run.meta.get("fingerprint", {})
        diffs = _differences(fingerprint, suite.fingerprint())
        if diffs:
            raise AttnbenchError(f"{options.resume}: the suite changed since this run, so the results would "
                                 "not be comparable:\n  " + "\n  ".join(diffs)
                                 + "\nStart a new run instead (drop --resume).")
        _check_writable(run.path)
        meta = run.meta
        meta.setdefault("resumed_at", []).append(dt.datetime.now().astimezone().isoformat())
        meta["status"] = "running"
        return run.path, meta, run.records, run.warnings
    run_dir = _new_run_dir(options.out_dir, suite.name)
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
        "environment": collect_environment(),
    }
    return run_dir, meta, [], []


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
        if record["status"] != "ok":
            case = record["case"]
            colour = "yellow" if record["status"] == "skipped" else "red"
            self.progress.console.log(f"[{colour}]{record['status']}[/] {case['label']} N={case['seq_len']} "
                                      f"H={case['heads']}: {record.get('error') or ''}", markup=True)
        self.progress.advance(self.task)


def run_suite(suite: Suite, options: RunOptions) -> RunSummary:
    """Run every case of ``suite`` not already in the run directory."""
    run_dir, meta, done, warnings = prepare_run_dir(suite, options)
    _write_meta(run_dir, meta)
    jsonl = run_dir / "cases.jsonl"
    if done and warnings:
        # Drop a truncated last line now so that appends start on a fresh line.
        write_atomic(jsonl, "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in done))
    done_ids = {r["case_id"] for r in done}
    cases = [c for c in suite.cases() if c.case_id not in done_ids]
    records = list(done)
    summary = RunSummary(run_dir=run_dir, records=records, warnings=warnings)
    pool = None if options.in_process else WorkerPool(options.preload + preload_modules(suite))

    def on_signal(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, on_signal)
    try:
        with _Progress(len(cases), options.quiet) as progress:
            for case in cases:
                progress.start(case)
                reason = skip_reason(case, records)
                if reason:
                    record = skipped_record(case, reason)
                else:
                    started, t0 = time.time(), time.perf_counter()
                    if pool is None:
                        outcome = _run_in_process(case, lambda *_: None)
                    else:
                        outcome = pool.run(case, case.limits.case_timeout_s, lambda *_: None)
                    record = make_record(case, outcome, started, time.perf_counter() - t0)
                append_record(jsonl, record)
                records.append(record)
                summary.ran += 1
                progress.finished(record)
    except (Interrupted, KeyboardInterrupt):
        summary.interrupted = True
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pool is not None:
            pool.kill() if summary.interrupted else pool.close()
        write_csv(records_frame(records, run_dir.name), run_dir / "results.csv")
        meta["status"] = "interrupted" if summary.interrupted else "finished"
        meta["finished_at"] = dt.datetime.now().astimezone().isoformat()
        meta["cases_total"] = len(suite.cases())
        meta["cases_done"] = len(records)
        _write_meta(run_dir, meta)
    return summary


def preload_modules(suite: Suite) -> list[str]:
    """Modules a spawned worker must import to know the suite's variants that
    were registered outside attnbench (by a test, a script or a plugin)."""
    from attnbench.variants.registry import _VARIANTS

    modules = []
    for spec in suite.variants:
        entry = _VARIANTS.get(spec.name)
        module = getattr(entry.target, "__module__", "") if entry else ""
        if module and module != "__main__" and not module.startswith("attnbench.variants"):
            modules.append(module)
    return sorted(set(modules))


def resume_command(summary: RunSummary, suite_path: str) -> str:
    return f"attnbench run {suite_path} --resume {summary.run_dir}"



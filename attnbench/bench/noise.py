"""What else the machine did while a run was timing: the load average at the
start and the end, and the CPU time other processes took (the whole machine's
busy time over the run minus our own process tree's), with warnings that name
the cause of noisy figures: another process taking a noticeable share of the
cores, more threads than cores, a CPU frequency governor other than
``performance``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from attnbench.bench.calibration import calibration_drift
from attnbench.bench.environment import governors

OTHER_SHARE_WARN = 0.10  # other processes took over 10% of all cores' time
BUSY_LOAD = 0.5  # a load average over half the cores (besides our own threads)
def _busy_s(times: Any) -> float:
    """Busy seconds of the whole machine from ``psutil.cpu_times()``: all time
    but idle and I/O wait (guest time is already inside user time on Linux)."""
    fields = times._asdict()
    total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
    return total - fields.get("idle", 0.0) - fields.get("iowait", 0.0)


def _process_s(proc: Any) -> float:
    t = proc.cpu_times()
    return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


class NoiseMonitor:
    """``start()`` before the sweep, ``stop()`` after it: the dictionary that
    goes into run.json as ``noise``. The process tree is ours (this process
    and its descendants, the workers and the fork server among them; finished
    workers count through their parent's children times)."""

    def __init__(self, psutil_module: Any = None, loadavg: Callable[[], tuple[float, float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic, pid: int | None = None) -> None:
        if psutil_module is None:
            import psutil as psutil_module
        self.psutil = psutil_module
        self.loadavg = loadavg or (os.getloadavg if hasattr(os, "getloadavg") else None)
        self.clock = clock
        self.pid = pid or os.getpid()
        self._start: dict[str, Any] | None = None

    def _tree_s(self) -> dict[int, float]:
        """CPU seconds of each process of our tree, by pid."""
        ps = self.psutil
        try:
            root = ps.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except ps.Error:
            return {}
        out = {}
        for proc in procs:
            try:
                out[proc.pid] = _process_s(proc)
            except ps.Error:  # exited in between: its time moves to its parent's children times
                continue
        return out

    def _snapshot(self) -> dict[str, Any]:
        return {"t": self.clock(), "busy_s": _busy_s(self.psutil.cpu_times()), "own": self._tree_s(),
                "load": list(self.loadavg()) if self.loadavg else None}

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, Any]:
        """The run's noise record (empty when ``start`` was not called)."""
        if self._start is None:
            return {}
        end = self._snapshot()
        cores = self.psutil.cpu_count(logical=True) or 1
        wall = max(end["t"] - self._start["t"], 1e-9)
        # Per process, so that one gone since the start (not reaped yet) takes
        # its earlier time with it instead of making ours negative.
        before = self._start["own"]
        own = sum(max(0.0, s - before.get(pid, 0.0)) for pid, s in end["own"].items())
        other = max(0.0, end["busy_s"] - self._start["busy_s"] - own)
        return {"wall_s": wall, "cores": cores, "own_cpu_s": own, "other_cpu_s": other,
                "other_share": other / (wall * cores), "load_average_start": self._start["load"],
                "load_average_end": end["load"], "governors": governors()}


def noise_warnings(noise: dict[str, Any], threads: int | None = None, usable_cores: int | None = None
                   ) -> list[str]:
    """Warnings about what made a run's timings noisy. ``threads``: the intra-op
    threads each case used; ``usable_cores``: the CPUs this process may run on."""
    out = []
    cores = noise.get("cores") or usable_cores or 1
    share = noise.get("other_share")
    if share is not None and share > OTHER_SHARE_WARN:
        out.append(f"other processes used {share:.0%} of the {cores} cores' time during the run "
                   f"({noise.get('other_cpu_s', 0):.0f} CPU-s in {noise.get('wall_s', 0):.0f} s): timings are "
                   "noisy; run on a quiet machine")
    # The load averages stand in only where the other processes' share was not
    # measured: they lag by minutes, so a quiet run started right after another
    # run read "busy" at its start (1.5 on 2 cores) while others took 0.7%.
    measured = share is not None
    start = None if measured else noise.get("load_average_start")
    if start and start[0] > BUSY_LOAD * cores:
        out.append(f"the machine was busy when the run started (load average {start[0]:.1f} on {cores} cores)")
    end = None if measured else noise.get("load_average_end")
    if end and end[0] > (threads or 1) + BUSY_LOAD * cores:
        out.append(f"the machine was busy at the end of the run (load average {end[0]:.1f} on {cores} cores, "
                   f"{threads or 1} of it this run's threads)")
    usable = usable_cores or cores
    if threads and usable and threads > usable:
        out.append(f"each case ran {threads} threads on {usable} usable core(s): oversubscribed threads wait "
                   f"for each other (set OMP_NUM_THREADS={usable})")
    slow = [g for g in noise.get("governors") or [] if g != "performance"]
    if slow:
        out.append(f"CPU frequency governor is {', '.join(slow)}, not 'performance': clock changes add noise "
                   "(e.g. `cpupower frequency-set -g performance`)")
    return out


def run_warnings(meta: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """What the run's calibrations and noise record say about its figures."""
    out = []
    calibration = meta.get("calibration") or {}
    for start, end in zip(calibration.get("start") or [], calibration.get("end") or [], strict=False):
        out += calibration_drift(start, end)
    threads = max((r.get("threads") or 0 for r in records), default=0) or None
    environment = meta.get("environment") or {}
    usable = environment.get("cpu_affinity") or environment.get("cpu_cores_logical")
    noise = meta.get("noise")
    if noise and (meta.get("executor") or {}).get("kind") == "ray":
        # The cases ran in Ray's worker processes, which are not the driver's
        # children (and may be on other machines): their time would read as
        # other processes' and their threads as this machine's load.
        noise = {k: v for k, v in noise.items()
                 if k not in ("other_share", "load_average_start", "load_average_end")}
    if noise:
        out += noise_warnings(noise, threads, usable)
    return out

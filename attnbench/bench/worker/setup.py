"""How a worker process sets itself up before it runs cases: it dies with
the sweep, takes its share of the CPUs, fixes the C allocator's thresholds,
and applies a case's memory limit. Used by the workers (``child.py``) and
the calibration child."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from attnbench.model import MIB, Case, resolve_device


def die_with_parent() -> None:
    """Linux: have the kernel kill this worker if its parent dies (a runner
    killed with SIGKILL must not leave a worker computing for hours)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: The run's allocator (``timing.allocator``: steady or default), set by the sweep
#: in the environment every worker and calibration inherits.
MALLOC_ENV = "ATTNBENCH_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
STEADY_MMAP_THRESHOLD = 1 << 30


def steady_malloc() -> str:
    """Fix glibc malloc's thresholds for this process (Linux): large tensors
    then come from the heap and freed memory stays there, as in the steady
    state of a training loop. Left dynamic (glibc's default), a freed block
    between 128 KiB and 32 MiB raises the threshold for the next ones, so
    whether a pass pays for fresh pages (page faults, zeroing) depends on what
    ran before it in the process, which widens the spread of speed-ups between
    rounds (benchmarks/NOTES.md has the A/A figures). Returns what was set, for
    run.json."""
    if os.environ.get(MALLOC_ENV, "").lower() == "default" or not sys.platform.startswith("linux"):
        return "default"
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return "default"
    return "steady" if ok else "default"


def warm_thread_pool() -> None:
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
    (see ``attnbench.model.Limits``): RLIMIT_AS on CPU, the caching
    allocator's memory fraction on CUDA. A no-op without a limit."""
    limit = case.limits.memory_limit_mib
    if not limit:
        yield
        return
    import torch

    device = resolve_device(case.device)
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
    warm_thread_pool()
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


#: A worker that shares the machine's CPUs with others runs on these cores
#: ("0,1") with as many threads (set by the executor that starts it).
WORKER_CPUS_ENV = "ATTNBENCH_WORKER_CPUS"


def take_cpu_share() -> None:
    cpus = os.environ.get(WORKER_CPUS_ENV)
    if not cpus:
        return
    cores = {int(c) for c in cpus.split(",") if c.strip().isdigit()}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    import torch

    torch.set_num_threads(len(cores))


def exit_with_parent(alive: Any) -> None:
    """Exit once the sweep closes its end of ``alive`` (or dies). A forked
    worker's parent is the fork server, which waits for its children (they
    hold its liveness pipe), so PR_SET_PDEATHSIG alone would leave a worker
    still importing a slow module running after the sweep ended."""
    import threading

    def watch() -> None:
        try:
            alive.poll(None)  # nothing is ever sent: this returns at end of file
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="attnbench-parent-watch", daemon=True).start()

"""All devices of one machine: ``attnbench run SUITE --devices cuda:0,cuda:1``
(or ``--devices all``) runs one worker per device, each pinned to its GPU with
CUDA_VISIBLE_DEVICES, and hands each a whole setting group at a time; the
sweep alone records what they finish.

On CPU, parallel workers would measure each other (shared cores, caches and
memory bandwidth): more than one CPU worker is refused unless the user insists
(``--allow-shared-cpu``), and then each worker gets its own share of the cores
(affinity and as many torch threads) and run.json says so.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from attnbench.bench.executors.base import Executor, WorkUnit, interleavable
from attnbench.bench.placement import local_placement
from attnbench.bench.worker.messages import CaseStarted, Event
from attnbench.bench.worker.process import WorkerPool, calibrate_in_child
from attnbench.bench.worker.setup import WORKER_CPUS_ENV
from attnbench.errors import AttnbenchError
from attnbench.model import Case


def cuda_device_count() -> int:
    """GPUs this process may use, without creating a CUDA context in it."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(text: str) -> list[str]:
    """``--devices``: ``all`` (every GPU), or a comma list of ``cuda:N`` (each
    once) or of ``cpu`` (one entry per CPU worker); one kind."""
    if text.strip() == "all":
        count = cuda_device_count()
        if not count:  # never turn a GPU suite into hours on the CPU
            raise AttnbenchError("--devices all: this machine has no CUDA GPU; on CPU run without --devices "
                                 "(one worker), or name CPU workers: --devices cpu,cpu --allow-shared-cpu")
        return [f"cuda:{i}" for i in range(count)]
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise AttnbenchError("--devices: give cuda:0,cuda:1,... or cpu, or all")
    for device in devices:
        if device != "cpu" and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise AttnbenchError(f"--devices: {device!r} is not a device; use cuda:N (one per GPU), cpu, or all")
    kinds = {d.partition(":")[0] for d in devices}
    if len(kinds) > 1:
        raise AttnbenchError(f"--devices {text}: one kind of device per run (cuda:N ... or cpu ...), not both")
    gpus = [d for d in devices if d != "cpu"]
    if len(set(gpus)) != len(gpus):
        raise AttnbenchError(f"--devices {text}: a GPU is named twice; one worker per GPU")
    if gpus:
        count = cuda_device_count()
        missing = [d for d in gpus if int(d[5:]) >= count]
        if missing:
            raise AttnbenchError(f"--devices: {', '.join(missing)} not found (this machine has {count} GPUs)")
    return devices


def device_kind(devices: Sequence[str]) -> str:
    """What the suite's cases run on under ``--devices``: ``cuda`` or ``cpu``."""
    return "cpu" if devices[0] == "cpu" else "cuda"


def cpu_shares(workers: int) -> list[list[int]]:
    """The cores this process may use, split into ``workers`` disjoint, contiguous shares."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if workers > len(cores):
        raise AttnbenchError(f"--devices: {workers} CPU workers on {len(cores)} cores; at most one worker per core")
    size, extra = divmod(len(cores), workers)
    shares, start = [], 0
    for i in range(workers):
        end = start + size + (1 if i < extra else 0)
        shares.append(cores[start:end])
        start = end
    return shares


@dataclass
class _Slot:
    device: str  # cuda:N as this host numbers it, or cpu
    pool: WorkerPool
    cores: list[int] | None = None
    round: int | None = None  # the round of the last unit it ran: a new round starts a fresh worker


class _SlotFree:
    def __init__(self, slot: _Slot) -> None:
        self.slot = slot


class DevicePoolExecutor(Executor):
    """One worker process per device, each running a unit at a time in a thread
    of this process (the threads only wait on their workers' pipes)."""

    distributed = True

    def __init__(self, devices: Sequence[str], preload: list[str], allow_shared_cpu: bool = False) -> None:
        cpu_workers = sum(1 for d in devices if d == "cpu")
        if cpu_workers > 1 and not allow_shared_cpu:
            raise AttnbenchError(f"--devices: {cpu_workers} CPU workers would share this machine's cores and "
                                 "measure each other; run one, or add --allow-shared-cpu to give each its share "
                                 "of the cores (the run is marked as shared)")
        shares = cpu_shares(cpu_workers) if cpu_workers > 1 else []
        self._free: list[_Slot] = []
        for device in devices:
            if device == "cpu":
                cores = shares.pop(0) if shares else None
                environ = {WORKER_CPUS_ENV: ",".join(map(str, cores))} if cores else {}
                self._free.append(_Slot(device, WorkerPool(preload, environ), cores))
            else:
                environ = {"CUDA_VISIBLE_DEVICES": device.partition(":")[2]}
                self._free.append(_Slot(device, WorkerPool(preload, environ)))
        self._slots = list(self._free)
        self.slots = len(self._slots)
        self._events: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._busy = 0

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "devices", "devices": [s.device for s in self._slots]}
        if sum(1 for s in self._slots if s.device == "cpu") > 1:
            out["shared_cpu"] = {"workers": self.slots, "cores": [s.cores for s in self._slots]}
        return out

    def prepare(self) -> None:
        self._slots[0].pool.prestart()  # one fork server serves every device's worker

    def calibrate(self, device: str, dtype: str) -> dict[str, Any]:
        """In a child process: the sweep's own process must not hold GPU memory."""
        return calibrate_in_child(device, dtype)

    def run(self, cases: Sequence[Case]) -> Iterator[Event]:
        """Run ``cases`` on the first device (the sweep submits units instead)."""
        self.submit(WorkUnit(tuple(cases)))
        while self.in_flight:
            yield from self.poll(0.1)

    def submit(self, unit: WorkUnit) -> None:
        slot = self._free.pop(0)
        self._busy += 1
        thread = threading.Thread(target=self._run_unit, args=(slot, unit), name=f"attnbench-{slot.device}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run_unit(self, slot: _Slot, unit: WorkUnit) -> None:
        try:
            if slot.round is not None and slot.round != unit.round:
                slot.pool.close()  # each visit of a case in another process, as a sequential sweep does
            slot.round = unit.round
            if interleavable(unit.cases):
                for case in unit.cases:
                    self._events.put(CaseStarted(case))
                outcomes = slot.pool.run_unit(unit.cases)
                for outcome in outcomes if not self._stop.is_set() else []:  # interrupted: killed under it
                    outcome.placement = local_placement(outcome.case.device, worker_device=slot.device)
                    self._events.put(outcome)
                return
            for case in unit.cases:
                if self._stop.is_set():
                    break
                self._events.put(CaseStarted(case))
                started, t0 = time.time(), time.perf_counter()
                outcome = slot.pool.run(case, case.limits.case_timeout_s)
                outcome.started, outcome.wall_s = started, time.perf_counter() - t0
                outcome.placement = local_placement(case.device, worker_device=slot.device)
                if self._stop.is_set():  # interrupted: its worker was killed under it, not a crash
                    break
                self._events.put(outcome)
        except Exception as exc:  # noqa: BLE001 - only while being stopped: the pool is torn down under us
            if not self._stop.is_set():
                self._events.put(exc)
        finally:
            self._events.put(_SlotFree(slot))

    def poll(self, timeout_s: float) -> Iterator[Event]:
        try:
            item = self._events.get(timeout=timeout_s)
        except queue.Empty:
            return
        while True:
            if isinstance(item, _SlotFree):
                self._free.append(item.slot)
                self._free.sort(key=self._slots.index)  # the same device order whatever finishes first
                self._busy -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    @property
    def in_flight(self) -> int:
        return self._busy

    def close(self, interrupted: bool = False) -> None:
        self._stop.set()
        if interrupted:  # stop the cases in flight: their threads then see a dead worker and stop
            for slot in self._slots:
                slot.pool.stopping = True  # a unit's other cases are not run again
                process = slot.pool.process
                if process is not None and process.is_alive():
                    process.kill()
        for thread in self._threads:
            thread.join(timeout=30)
        for slot in self._slots:
            if interrupted:
                slot.pool.kill()
            else:
                slot.pool.close()

    @property
    def workers_started(self) -> int:
        return sum(slot.pool.started for slot in self._slots)

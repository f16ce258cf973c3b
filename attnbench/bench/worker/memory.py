"""Peak memory of one pass, measured in its own untimed run.

CUDA: the caching allocator's ``max_memory_allocated`` above what was
allocated before the pass (stats reset first); ``max_memory_reserved`` too.

CPU: PyTorch's profiler reports every allocation and free of the CPU
allocator; the running sum over the pass, in time order, peaks at the most
tensor memory the pass held above what existed before it. This counts tensor
bytes exactly and repeats run to run (unlike RSS, which depends on the C
allocator's caching and on what the process did before).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnbench.model import MIB


@dataclass(frozen=True)
class MemoryReading:
    peak_mib: float
    reserved_mib: float | None = None  # CUDA only


def measure_peak(region: Callable[[], object], device: torch.device) -> MemoryReading:
    if device.type == "cuda":
        return _cuda_peak(region, device)
    return _cpu_peak(region)


def _cuda_peak(region: Callable[[], object], device: torch.device) -> MemoryReading:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    base_reserved = torch.cuda.memory_reserved(device)
    region()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    reserved = torch.cuda.max_memory_reserved(device) - base_reserved
    return MemoryReading(peak_mib=max(peak, 0) / MIB, reserved_mib=max(reserved, 0) / MIB)


@contextlib.contextmanager
def _quiet_stderr():
    """Kineto prints start/stop lines on the C-level stderr; silence them."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak(region: Callable[[], object]) -> MemoryReading:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
            region()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return MemoryReading(peak_mib=peak / MIB)

"""The timing engine: warm-up, adaptive sampling, robust statistics.

A sample is one call of a pass; the caller supplies a function that runs any
untimed preparation and returns the elapsed milliseconds of the timed region,
synchronised on CUDA (see ``timed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from attnbench.model import TimingSettings
from attnbench.stats.samples import rel_iqr


def timed(region: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of ``region``; waits for the GPU on CUDA."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        region()
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    region()
    return (time.perf_counter() - t0) * 1e3


def sample(run_once: Callable[[], float], settings: TimingSettings) -> list[float]:
    """Warm up, then collect samples (ms) until ``min_time_s`` is spent or
    ``max_reps`` are taken, stopping early once IQR/median is under target
    (never before ``min_reps`` samples)."""
    for _ in range(settings.warmup):
        run_once()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < settings.max_reps:
        samples.append(run_once())
        if len(samples) < settings.min_reps:
            continue
        if rel_iqr(samples) <= settings.target_rel_iqr:
            break
        if time.perf_counter() - start >= settings.min_time_s:
            break
    return samples

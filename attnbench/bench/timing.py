"""The timing engine: warm-up, adaptive sampling, robust statistics.

A sample is one call of a pass; the caller supplies a function that runs any
untimed preparation and returns the elapsed milliseconds of the timed region,
synchronised on CUDA (see ``timed``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from attnbench.suite import TimingSettings

NOISY_REL_IQR = 0.10  # a figure whose IQR/median exceeds this is flagged as noisy


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


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3) with linear interpolation; a single sample has zero spread."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def rel_iqr(samples: list[float]) -> float:
    q1, med, q3 = quartiles(samples)
    return (q3 - q1) / med if med > 0 else 0.0


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


def summarize(samples: list[float]) -> dict[str, float | int | None]:
    """The statistics the results table carries (all in milliseconds)."""
    if not samples:
        return {"median_ms": None, "iqr_ms": None, "min_ms": None, "mean_ms": None, "std_ms": None,
                "samples": 0}
    q1, med, q3 = quartiles(samples)
    return {
        "median_ms": med,
        "iqr_ms": q3 - q1,
        "min_ms": min(samples),
        "mean_ms": statistics.fmean(samples),
        "std_ms": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "samples": len(samples),
    }

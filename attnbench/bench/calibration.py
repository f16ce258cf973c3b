"""The device's limits, measured in a second or two: the matrix-multiply rate
(FLOP/s) at a dtype and the memory bandwidth (bytes read + written per second
by a large copy).

A run measures both at its start and its end. A case's achieved FLOP/s over
the measured matmul rate places it on a roofline (how far from the machine's
compute limit; a layer far below it at large N is bound by memory or by
overheads), and a run whose two calibrations differ by more than
``DRIFT_WARN`` warns that the machine changed under it (clock, thermal state,
a neighbour).

Method. Matmul: square (n×n)·(n×n) products of a fixed size per device (1024
on CPU, 8192 on CUDA: the same work at the start and the end of a run, so the
two rates compare; a size picked from a first timing would follow the load),
as many products per timed region as fill ``target_s``, the median of
``repeats`` regions; 2·n³ FLOPs a product. Bandwidth: ``dst.copy_(src)`` of
a buffer far larger than the caches (128 MiB on CPU, 1 GiB on CUDA), repeated
to fill ``target_s``; 2 × its size in bytes a copy; the median of ``repeats``.
On CUDA every timed region is bracketed by synchronisations.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

CALIBRATION_SCHEMA = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
TARGET_S = 0.1  # one timed region
REPEATS = 3  # timed regions; the median is kept
MATMUL_N = {"cpu": 1024, "cuda": 8192}
COPY_MIB = {"cpu": 128, "cuda": 1024}
# Start and end calibrations further apart than this warn (and the verdict says
# so: attnbench.analysis.verdict). Six back-to-back calibrations on this
# project's 2-core VM, nothing else running, read 89-175 GFLOP/s and 21-31
# GB/s within a minute: the VM's own speed moves; 23 quiet runs moved by a
# median 26% between start and end. Under 20% is within a quiet run's jitter.
DRIFT_WARN = 0.20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _region_s(fn: Callable[[], object], device: torch.device, times: int = 1) -> float:
    """Seconds for ``times`` calls of ``fn``, synchronised on CUDA."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(times):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def matmul_rate(device: torch.device, dtype: torch.dtype, target_s: float = TARGET_S,
                repeats: int = REPEATS) -> dict[str, Any]:
    """FLOP/s of square matrix products at ``dtype`` on ``device``."""
    n = MATMUL_N.get(device.type, MATMUL_N["cuda"])
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    _region_s(lambda: a @ b, device)  # warm-up: the library picks its kernel
    one = min(_region_s(lambda: a @ b, device) for _ in range(2))
    times = max(1, round(target_s / max(one, 1e-9)))
    regions = [_region_s(lambda: a @ b, device, times) for _ in range(repeats)]
    seconds = statistics.median(regions)
    return {"matmul_flops": 2.0 * n**3 * times / seconds, "matmul_n": n, "matmul_per_region": times}


def copy_bandwidth(device: torch.device, target_s: float = TARGET_S, repeats: int = REPEATS,
                   mib: float | None = None) -> dict[str, Any]:
    """Bytes read and written per second by ``dst.copy_(src)`` of a large buffer."""
    mib = float(mib if mib is not None else COPY_MIB.get(device.type, COPY_MIB["cuda"]))
    count = int(mib * (1 << 20)) // 4
    src = torch.rand(count, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: pages faulted in, not timed
    one = _region_s(lambda: dst.copy_(src), device)
    times = max(1, round(target_s / max(one, 1e-9)))
    regions = [_region_s(lambda: dst.copy_(src), device, times) for _ in range(repeats)]
    seconds = statistics.median(regions)
    return {"bandwidth_bytes_per_s": 2.0 * src.numel() * src.element_size() * times / seconds,
            "copy_mib": mib}


def calibrate(device: str = "cpu", dtype: str = "float32", target_s: float = TARGET_S,
              repeats: int = REPEATS) -> dict[str, Any]:
    """Measure the device's matmul rate at ``dtype`` and its copy bandwidth.
    A device that is not there (no CUDA) gives ``{"error": ...}`` instead."""
    started = time.perf_counter()
    out: dict[str, Any] = {"schema": CALIBRATION_SCHEMA, "device": device, "dtype": dtype,
                           "at": dt.datetime.now().astimezone().isoformat(),
                           "threads": torch.get_num_threads()}
    try:
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           "cpu" if device == "auto" else device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return {**out, "error": "CUDA is not available on this machine"}
        if dtype not in DTYPES:
            return {**out, "error": f"unknown dtype {dtype!r}"}
        out.update(matmul_rate(dev, DTYPES[dtype], target_s, repeats))
        out.update(copy_bandwidth(dev, target_s, repeats))
        if dev.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(dev)
    except (RuntimeError, MemoryError) as exc:  # out of memory, a dtype the device lacks
        return {**out, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
    out["seconds"] = time.perf_counter() - started
    return out


FIELDS = {"matmul_flops": "matmul rate", "bandwidth_bytes_per_s": "copy bandwidth"}


def drift(start: float | None, end: float | None) -> float | None:
    """How far a calibration figure moved, either way: the larger of end/start and
    start/end, less one (0.25 is 25% faster, or 20% slower: 1.25 times as long);
    None without two positive figures."""
    if not start or not end or not (math.isfinite(start) and math.isfinite(end)) or start <= 0 or end <= 0:
        return None
    return max(end / start, start / end) - 1


def calibration_drift(start: dict[str, Any] | None, end: dict[str, Any] | None,
                      threshold: float = DRIFT_WARN) -> list[str]:
    """Warnings for each figure that moved by more than ``threshold`` between
    the start and the end of a run (per device and dtype calibrated)."""
    if not start or not end:
        return []
    warnings = []
    for key, label in FIELDS.items():
        a, b = start.get(key), end.get(key)
        moved = drift(a, b)
        if moved is not None and moved > threshold:
            change = b / a - 1
            warnings.append(f"the {label} of {start.get('device')} {start.get('dtype')} changed by "
                            f"{change:+.0%} between the start and the end of the run "
                            f"({format_rate(key, a)} -> {format_rate(key, b)}): the machine changed under "
                            "the run (clock, temperature, another process)")
    return warnings


def format_rate(key: str, value: float | None) -> str:
    """``1.23 TFLOP/s`` or ``12.3 GB/s``."""
    if value is None or not math.isfinite(value):
        return "—"
    if key == "matmul_flops":
        return f"{value / 1e12:.3g} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.3g} GFLOP/s"
    return f"{value / 1e9:.3g} GB/s"

"""What the machine offers, and what would make its timings noisy.

The same dictionary goes into every run.json and is printed by ``attnbench env``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ENV_SCHEMA = 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _governors() -> list[str]:
    found = set()
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            found.add(path.read_text().strip())
        except OSError:
            continue
    return sorted(found)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _sdpa_backends(torch: Any) -> dict[str, bool]:
    cuda = torch.backends.cuda
    out: dict[str, bool] = {"math": True}
    for name, fn in (("flash", "flash_sdp_enabled"), ("efficient", "mem_efficient_sdp_enabled"),
                     ("cudnn", "cudnn_sdp_enabled")):
        enabled = getattr(cuda, fn, None)
        out[name] = bool(torch.cuda.is_available() and enabled is not None and enabled())
    out["cpu_flash"] = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
    return out


def _gpus(torch: Any) -> list[dict[str, Any]]:
    gpus = []
    if not torch.cuda.is_available():
        return gpus
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 2),
                     "multiprocessors": props.multi_processor_count,
                     "capability": f"{props.major}.{props.minor}"})
    return gpus


def _gpu_processes() -> int | None:
    """How many compute processes share the GPUs (nvidia-smi), None if unknown."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return len([line for line in out.stdout.splitlines() if line.strip()])


def collect_environment() -> dict[str, Any]:
    import psutil
    import torch

    import attnbench

    mem = psutil.virtual_memory()
    env: dict[str, Any] = {
        "schema": ENV_SCHEMA,
        "attnbench": attnbench.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": _gpus(torch),
        "gpu_processes": _gpu_processes() if torch.cuda.is_available() else None,
        "cpu_model": _cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_governors": _governors(),
        "memory_total_gib": round(mem.total / 2**30, 2),
        "memory_available_gib": round(mem.available / 2**30, 2),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "sdpa_backends": _sdpa_backends(torch),
    }
    env["warnings"] = environment_warnings(env)
    return env


def environment_warnings(env: dict[str, Any]) -> list[str]:
    """Conditions that make timings noisy or unrepresentative."""
    warnings = []
    if env.get("gpu_processes"):
        warnings.append(f"{env['gpu_processes']} other process(es) are using the GPU: timings will be noisy")
    governors = [g for g in env.get("cpu_governors") or [] if g != "performance"]
    if governors:
        warnings.append(f"CPU frequency governor is {', '.join(governors)}, not 'performance': "
                        "clock changes add noise")
    threads, cores = env.get("torch_threads"), env.get("cpu_cores_physical") or env.get("cpu_cores_logical")
    if threads and cores and threads < min(cores, 4):
        warnings.append(f"torch uses {threads} thread(s) of {cores} cores: CPU figures will be slow")
    load = env.get("load_average")
    logical = env.get("cpu_cores_logical") or 1
    if load and load[0] > 0.5 * logical:
        warnings.append(f"the machine is busy (load average {load[0]:.1f} on {logical} logical cores): "
                        "timings will be noisy")
    return warnings

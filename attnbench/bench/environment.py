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

from attnbench.model import SDPA_KERNELS

ENV_SCHEMA = 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else what platform knows)."""
    return _cpu_model()


CPU_SYSFS = Path("/sys/devices/system/cpu")


def governors(root: Path = CPU_SYSFS) -> list[str]:
    """The CPU frequency governors in use (empty where sysfs does not say)."""
    found = set()
    for path in root.glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            found.add(path.read_text().strip())
        except OSError:
            continue
    return sorted(g for g in found if g)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# The CUDA kernels of SDPA: those with a switch and a least compute capability.
_CUDA_SDPA = [k for k in SDPA_KERNELS if k.cuda_switch and k.least_capability]


def _sdpa_backends(torch: Any) -> dict[str, bool]:
    """Which kernels ``scaled_dot_product_attention`` can pick here: built into
    this torch, enabled, and (CUDA kernels) supported by GPU 0's compute
    capability. Decided without creating a CUDA context (the runner calls this
    in the parent process, which must not hold GPU memory during a sweep)."""
    cuda = torch.backends.cuda
    out: dict[str, bool] = {"math": bool(getattr(cuda, "math_sdp_enabled", lambda: True)())}
    capability = None
    if torch.cuda.is_available() and torch.cuda.device_count():
        props = torch.cuda.get_device_properties(0)
        capability = (props.major, props.minor)
    for kernel in _CUDA_SDPA:
        name, least = kernel.name, kernel.least_capability
        enabled = getattr(cuda, kernel.cuda_switch, None)
        usable = capability is not None and capability >= least and enabled is not None and bool(enabled())
        if name == "flash" and usable and hasattr(cuda, "is_flash_attention_available"):
            usable = bool(cuda.is_flash_attention_available())
        if name == "cudnn" and usable:
            usable = bool(torch.backends.cudnn.is_available())
        out[name] = usable
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
    """How many other compute processes use the GPUs (nvidia-smi), None if unknown."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    pids = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return len([pid for pid in pids if pid != str(os.getpid())])


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
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_governors": governors(),
        "memory_total_gib": round(mem.total / 2**30, 2),
        "memory_available_gib": round(mem.available / 2**30, 2),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "sdpa_backends": _sdpa_backends(torch),
        "cuda_launch_blocking": os.environ.get("CUDA_LAUNCH_BLOCKING") or None,
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
        warnings.append(f"torch uses {threads} thread(s) of {cores} cores: CPU figures will be slow "
                        "(set OMP_NUM_THREADS or torch.set_num_threads to the core count)")
    usable = env.get("cpu_affinity") or env.get("cpu_cores_logical")
    if threads and usable and threads > usable:
        warnings.append(f"torch uses {threads} threads but this process may run on only {usable} CPU(s): "
                        f"oversubscribed threads make timings noisy (set OMP_NUM_THREADS={usable})")
    if env.get("cuda_launch_blocking") not in (None, "", "0"):
        warnings.append("CUDA_LAUNCH_BLOCKING is set: every kernel launch waits, so GPU timings are not "
                        "representative")
    load = env.get("load_average")
    logical = env.get("cpu_cores_logical") or 1
    if load and load[0] > 0.5 * logical:
        warnings.append(f"the machine is busy (load average {load[0]:.1f} on {logical} logical cores): "
                        "timings will be noisy")
    return warnings


def environment_rows(env: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) lines for the ``attnbench env`` table."""

    def known(value: Any) -> str:
        return "none" if value is None or value == [] else str(value)

    rows = [("attnbench", f"{env.get('attnbench')}" + (f" (git {env['git_commit'][:10]})"
                                                        if env.get("git_commit") else "")),
            ("python", known(env.get("python"))), ("torch", known(env.get("torch"))),
            ("CUDA", known(env.get("cuda"))), ("cuDNN", known(env.get("cudnn")))]
    gpus = env.get("gpus") or []
    for gpu in gpus:
        rows.append((f"GPU {gpu['index']}", f"{gpu['name']}, {gpu['memory_gib']:g} GiB, "
                                            f"{gpu['multiprocessors']} multiprocessors, "
                                            f"compute capability {gpu['capability']}"))
    if not gpus:
        rows.append(("GPU", "none"))
    if env.get("gpu_processes") is not None:
        rows.append(("other GPU processes", str(env["gpu_processes"])))
    rows.append(("CPU", known(env.get("cpu_model"))))
    rows.append(("CPU cores", f"{known(env.get('cpu_cores_physical'))} physical, "
                              f"{known(env.get('cpu_cores_logical'))} logical, "
                              f"{known(env.get('cpu_affinity'))} usable by this process"))
    rows.append(("torch threads", f"{known(env.get('torch_threads'))} intra-op, "
                                  f"{known(env.get('torch_interop_threads'))} inter-op"))
    rows.append(("CPU governor", ", ".join(env.get("cpu_governors") or []) or "unknown"))
    if env.get("memory_total_gib") is not None:
        rows.append(("memory", f"{env.get('memory_available_gib')} GiB available of {env['memory_total_gib']} GiB"))
    if env.get("load_average"):
        rows.append(("load average", " ".join(f"{x:.2f}" for x in env["load_average"])))
    rows.append(("OS", known(env.get("os"))))
    backends = env.get("sdpa_backends") or {}
    usable = [k for k, v in backends.items() if v]
    missing = [k for k, v in backends.items() if not v]
    rows.append(("SDPA backends", ", ".join(usable) + (f" (not available: {', '.join(missing)})" if missing else "")))
    return rows

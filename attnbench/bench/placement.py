"""Where a case ran: the host, the device as that host numbers it, and the
device's model. Every record carries them, so that a run merged from several
machines, or resumed on another one, still says which figure came from where,
and a report can refuse to pair figures from different device models."""

from __future__ import annotations

import functools
import os
import socket
from typing import Any


@functools.cache
def host_name() -> str:
    return socket.gethostname()


@functools.cache
def cpu_model() -> str:
    from attnbench.bench.environment import cpu_model as read

    return read()


def physical_gpu(index: int = 0) -> str:
    """``cuda:K`` as the host numbers its GPUs, for the process's GPU ``index``
    (CUDA_VISIBLE_DEVICES maps the two when it holds plain indices)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible):
        return f"cuda:{visible[index]}" if visible[index].isdigit() else visible[index]
    return f"cuda:{index}"


def local_placement(device: str, worker_device: str | None = None) -> dict[str, Any]:
    """The placement of a case on ``device`` run on this host. On CUDA the
    model is the GPU name the worker reports (records take it from there)."""
    if worker_device is None:
        if device.startswith("cuda"):
            index = device.partition(":")[2]
            worker_device = physical_gpu(int(index) if index.isdigit() else 0)
        else:
            worker_device = device
    model = cpu_model() if worker_device == "cpu" else None
    return {"host": host_name(), "worker_device": worker_device, "device_model": model}

"""Test-only variants that fail on purpose, one per way a case can go wrong.

Registered with ``origin="test"`` when this module is imported. A worker
process imports it too (the runner preloads the module of any variant
registered outside attnbench), so the faults happen inside the worker, as a
real broken variant's would.

* ``faulty-raise``: forward raises ``ValueError`` -> status ``error``.
* ``faulty-abort``: forward calls ``os.abort()`` (SIGABRT) -> ``crashed``.
* ``faulty-hang``: forward sleeps forever -> ``timeout`` (past limits.case_timeout_s).
* ``faulty-oom``: forward raises ``torch.OutOfMemoryError`` -> ``oom``; larger N
  of the same series are then ``skipped``.
* ``faulty-hog``: forward allocates ``size_mib`` MiB; under a suite's
  ``limits.memory_limit_mib`` smaller than that the allocation fails -> ``oom``.
* ``faulty-oomkill``: forward SIGKILLs its own process, as the kernel's OOM
  killer would -> ``oom``.
* ``faulty-late-abort``: works for ``calls`` forward calls, then aborts: a
  crash in the middle of a unit's sampling turns (``bench.interleave``).
* ``faulty-oom-once``: raises ``torch.OutOfMemoryError`` on its ``call``-th
  forward only (then works), as when its graph fits alone but not beside others'.
* ``faulty-slow``: a working layer that sleeps ``delay_s`` per call, for tests
  that need a sweep slow enough to interrupt without burning CPU.
* ``faulty-killhost``: inside a Ray task, SIGKILLs the Ray worker that runs the
  unit (as when a node is lost) -> the unit is sent again once, then ``crashed``;
  anywhere else it raises (it must never kill a local sweep's own process).

Tests that register these should call :func:`unregister_all` when done, so
that no other test enumerating ``attnbench.variant_names()`` meets them.
"""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn

from attnbench.variants.layer import AttentionLayer
from attnbench.variants.registry import register, unregister

RAISE_MESSAGE = "faulty variant raised on purpose"


class _Faulty(AttentionLayer):
    """A layer with one parameter so that every pass has a graph to run."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__(dim, heads, seq_len, causal)
        self.scale = nn.Parameter(torch.ones(dim))

    def flops(self, batch: int, seq_len: int) -> int:
        return batch * seq_len * self.dim

    def fault(self) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fault()
        return x * self.scale


class RaiseLayer(_Faulty):
    """Raises a Python exception in forward."""

    def fault(self) -> None:
        raise ValueError(RAISE_MESSAGE)


class AbortLayer(_Faulty):
    """Kills its process with SIGABRT in forward, like a segfaulting kernel."""

    def fault(self) -> None:
        os.abort()


class HangLayer(_Faulty):
    """Never returns from forward."""

    def fault(self) -> None:
        while True:
            time.sleep(3600)


class OomLayer(_Faulty):
    """Raises the error PyTorch raises when the GPU is out of memory."""

    def fault(self) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (raised on purpose by a test)")


class HogLayer(_Faulty):
    """Allocates (and touches) ``size_mib`` MiB in forward."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, size_mib: int = 1024) -> None:
        super().__init__(dim, heads, seq_len, causal)
        self.size_mib = size_mib

    def fault(self) -> None:
        block = torch.ones(self.size_mib * (1 << 20) // 4)
        del block


class OomKillLayer(_Faulty):
    """Dies of SIGKILL in forward, as when the kernel's OOM killer picks it."""

    def fault(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class LateAbortLayer(_Faulty):
    """Works for ``calls`` forward calls, then SIGABRTs its process."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, calls: int = 3) -> None:
        super().__init__(dim, heads, seq_len, causal)
        self.calls, self.count = calls, 0

    def fault(self) -> None:
        self.count += 1
        if self.count > self.calls:
            os.abort()


class OomOnceLayer(_Faulty):
    """Runs out of memory on its ``call``-th forward only."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, call: int = 2) -> None:
        super().__init__(dim, heads, seq_len, causal)
        self.call, self.count = call, 0

    def fault(self) -> None:
        self.count += 1
        if self.count == self.call:
            raise torch.OutOfMemoryError("out of memory (raised once, on purpose, by a test)")


class SlowLayer(_Faulty):
    """Works, but each call sleeps ``delay_s`` seconds."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False, delay_s: float = 0.1) -> None:
        super().__init__(dim, heads, seq_len, causal)
        self.delay_s = delay_s

    def fault(self) -> None:
        time.sleep(self.delay_s)


class KillHostLayer(_Faulty):
    """Kills the Ray worker process running its unit (and so itself)."""

    def fault(self) -> None:
        host = os.environ.get("ATTNBENCH_RAY_TASK_PID")
        if not host:
            raise RuntimeError("faulty-killhost only kills a Ray task's worker; this is not one")
        os.kill(int(host), signal.SIGKILL)
        time.sleep(60)


VARIANTS = {
    "faulty-raise": RaiseLayer,
    "faulty-abort": AbortLayer,
    "faulty-hang": HangLayer,
    "faulty-oom": OomLayer,
    "faulty-hog": HogLayer,
    "faulty-oomkill": OomKillLayer,
    "faulty-late-abort": LateAbortLayer,
    "faulty-oom-once": OomOnceLayer,
    "faulty-slow": SlowLayer,
    "faulty-killhost": KillHostLayer,
}


def register_all() -> None:
    """(Re-)register every faulty variant; idempotent."""
    for name, cls in VARIANTS.items():
        register(name, family="custom", complexity="O(N·d)", origin="test", replace=True,
                 description=cls.__doc__)(cls)


def unregister_all() -> None:
    for name in VARIANTS:
        unregister(name)


register_all()

"""What a worker tells the sweep, typed: the message kinds, one dataclass per
kind, and the outcome of one case as an executor hands it back.

A worker streams, per case: ``Meta`` once the layer is built, one
``PassResult`` per pass, or a ``Failure`` when the case cannot even start,
then ``Done``. A new worker first sends ``Ready``. Each message's
``payload()`` is the dict the results record stores (``records.make_record``),
so the record's keys and values are those of the record schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from attnbench.model import Case, Status


class Kind(str, Enum):
    READY = "ready"
    META = "meta"
    PASS = "pass"
    FAIL = "fail"
    DONE = "done"


@dataclass(frozen=True)
class Ready:
    """A new worker has imported what it needs and waits for cases."""

    kind: ClassVar[Kind] = Kind.READY
    pid: int

    def payload(self) -> dict[str, Any]:
        return {"pid": self.pid}


@dataclass(frozen=True)
class Meta:
    """The built layer: what the record says about the case beside its passes."""

    kind: ClassVar[Kind] = Kind.META
    family: str | None
    param_count: int
    threads: int
    device_name: str
    build_s: float
    prepared: dict[str, Any] = field(default_factory=dict)  # compile_s, sdpa_backend: only when they apply

    def payload(self) -> dict[str, Any]:
        return {**self.prepared, "family": self.family, "param_count": self.param_count,
                "threads": self.threads, "device_name": self.device_name, "build_s": self.build_s}


@dataclass
class PassResult:
    """One pass measured (or failed): its samples, peak memory and FLOPs."""

    kind: ClassVar[Kind] = Kind.PASS
    pass_name: str
    status: str = Status.OK
    error: str | None = None
    samples_ms: list[float] = field(default_factory=list)
    flops: int | None = None
    flops_source: str | None = None
    peak_mem_mib: float | None = None
    peak_reserved_mib: float | None = None
    memory_measured: bool = False  # the memory run finished: the record then carries its figures
    traceback: str | None = None  # of an error (not an OOM or a skip): kept in cases.jsonl only
    turns: str | None = None  # sampled in turns: the unit's token, shared by the cases sampled with it
    cache_mib: float | None = None  # prefill, decode: the cache or state after the prompt
    step_bytes: int | None = None  # decode: the least bytes one step moves (state, weights, token)

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pass": self.pass_name, "status": self.status, "error": self.error,
                               "samples_ms": self.samples_ms, "flops": self.flops,
                               "flops_source": self.flops_source}
        if self.traceback:
            out["traceback"] = self.traceback
        if self.turns:
            out["turns"] = self.turns
        if self.memory_measured:
            out.update(peak_mem_mib=self.peak_mem_mib, peak_reserved_mib=self.peak_reserved_mib)
        if self.cache_mib is not None:
            out["cache_mib"] = self.cache_mib
        if self.step_bytes is not None:
            out["step_bytes"] = self.step_bytes
        return out


@dataclass(frozen=True)
class Failure:
    """The case could not start (or the worker failed around it)."""

    kind: ClassVar[Kind] = Kind.FAIL
    status: str
    error: str
    traceback: str | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "error": self.error}
        if self.traceback:
            out["traceback"] = self.traceback
        return out


@dataclass(frozen=True)
class Done:
    """The worker has sent everything about the case and waits for the next."""

    kind: ClassVar[Kind] = Kind.DONE

    def payload(self) -> dict[str, Any]:
        return {}


Message = Ready | Meta | PassResult | Failure | Done
#: How the measurement reports: called once per message.
Emit = Callable[[Message], None]


@dataclass
class Outcome:
    """One case as an executor hands it back to the sweep: the worker's messages
    and, when the worker died or hung around the case, the status and error
    that the passes it did not finish share."""

    case: Case
    messages: list[Message] = field(default_factory=list)
    status: str | None = None
    error: str | None = None
    worker_pid: int | None = None
    started: float = 0.0  # wall clock (time.time()) when the case was handed over
    wall_s: float = 0.0
    #: Where it ran, as the executor knows it: host, worker_device, device_model
    #: (and retry, when a cluster's worker died under the case's unit).
    placement: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseStarted:
    """An executor is about to run ``case`` (the progress bar shows it)."""

    case: Case


#: What an executor yields, in order, for every case it runs.
Event = CaseStarted | Outcome

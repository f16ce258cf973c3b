"""The data model every layer shares: what a case is, how it is timed and
limited, the passes, the statuses, the dtypes and the device names.

This module imports nothing else of attnbench (nor torch at import time), so
that the suite parser, the results reader, the measurement and the analysis
can all depend on it without depending on each other.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

MIB = float(1 << 20)
DTYPES = ("float32", "float16", "bfloat16", "float64")
# The CPU workers' allocator: glibc's malloc with its thresholds fixed (steady),
# or as glibc leaves it (default). See bench/worker/setup.py.
ALLOCATORS = ("steady", "default")
PASSES = ("forward", "backward", "forward_backward", "prefill", "decode")
#: What a suite times unless it says: one encoder layer's inference, backward and training step.
DEFAULT_PASSES = ("forward", "backward", "forward_backward")
#: Serving: the causal forward of a prompt that leaves a cache or state (prefill), and
#: one-token steps against it (decode; its figure is the time per step). Causal only.
SERVING_PASSES = ("prefill", "decode")
#: The passes a report shows: the papers' inference and training step, and serving's.
REPORTED_PASSES = ("forward", "forward_backward", "prefill", "decode")
PASS_SHORT = {"forward": "fwd", "backward": "bwd", "forward_backward": "f+b",  # table cells and --pass
              "prefill": "pre", "decode": "dec"}
#: Consecutive one-token steps a decode pass times from its prefill's state (a suite's decode_steps).
DEFAULT_DECODE_STEPS = 16
#: What a series of cases shares: everything but seq_len.
SERIES_FIELDS = ("label", "heads", "kv_heads", "dim", "batch", "dtype", "device", "causal")
# What the variants of one setting group share (everything but the variant); N last.
SETTING_FIELDS = ("device", "dtype", "batch", "dim", "causal", "heads", "kv_heads", "seq_len")
# A results row's experiment apart from the variant: its setting, then heads, N and pass.
SETTING = ["batch", "dim", "dtype", "device", "causal"]
CASE_KEYS = [*SETTING, "heads", "kv_heads", "seq_len", "pass"]


@dataclass(frozen=True)
class SdpaKernel:
    """One kernel of torch's ``scaled_dot_product_attention``: the dispatcher ops
    that show it ran, the ``torch.backends.cuda`` switch that enables it, the
    least CUDA compute capability it runs on, and its ``SDPBackend`` member."""

    name: str
    ops: tuple[str, ...] = ()
    cuda_switch: str | None = None
    least_capability: tuple[int, int] | None = None
    sdp_backend: str | None = None


SDPA_KERNELS = (
    SdpaKernel("flash", ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"),
               "flash_sdp_enabled", (8, 0), "FLASH_ATTENTION"),
    SdpaKernel("efficient", ("_scaled_dot_product_efficient_attention",), "mem_efficient_sdp_enabled", (5, 0),
               "EFFICIENT_ATTENTION"),
    SdpaKernel("math", (), "math_sdp_enabled", None, "MATH"),
    SdpaKernel("cudnn", ("_scaled_dot_product_cudnn_attention",), "cudnn_sdp_enabled", (8, 0), "CUDNN_ATTENTION"),
    SdpaKernel("overrideable", ("_scaled_dot_product_fused_attention_overrideable",)),
)


class Status(str, Enum):
    """How a case or a pass ended. A ``str``: records and CSV files hold the plain value."""

    OK = "ok"
    OOM = "oom"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    ERROR = "error"
    SKIPPED = "skipped"

    __str__ = str.__str__
    __format__ = str.__format__


STATUSES = tuple(s.value for s in Status)
# Worst first: the status of a case is the worst of its passes.
_SEVERITY = {Status.CRASHED: 5, Status.TIMEOUT: 4, Status.OOM: 3, Status.ERROR: 2, Status.SKIPPED: 1, Status.OK: 0}
#: Statuses that do not make a sweep fail (exit code 3).
HARMLESS = (Status.OK, Status.SKIPPED)


def worst_status(statuses: list[str]) -> str:
    """The most severe of ``statuses`` (crashed > timeout > oom > error > skipped > ok)."""
    return max(statuses, key=lambda s: _SEVERITY.get(s, 0)) if statuses else Status.OK.value


def resolve_device(device: str) -> str:
    """``auto`` is the GPU when there is one, else the CPU; other names pass
    through. Decided when the grid expands, so results name the device that ran."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class TimingSettings:
    """How a case is sampled. ``rounds``: how many times the sweep visits every
    case, each round all cases in a shuffled order, each visit in a fresh
    worker; the other settings apply to each visit. ``interleave``: the
    variants of a setting group are sampled in turns, pass by pass
    (``bench.interleave``), instead of one case after another."""

    rounds: int = 3
    warmup: int = 3  # untimed runs first
    min_time_s: float = 0.2  # keep sampling until this much time is spent ...
    max_reps: int = 50  # ... or this many samples
    min_reps: int = 5  # never fewer samples than this (unless max_reps is smaller)
    target_rel_iqr: float = 0.05  # stop early once IQR/median is under this
    interleave: bool = True
    allocator: str = "steady"  # one of ALLOCATORS: the CPU workers' malloc (bench.worker.setup)


@dataclass(frozen=True)
class Limits:
    """Per-case limits.

    ``memory_limit_mib`` (optional, default none): how much more memory a case
    may take than its worker held when the case started. On CPU the worker
    lowers its address-space limit (``RLIMIT_AS``) to its current virtual size
    plus this much for the case (virtual, not resident, memory: the limit is
    on what the case maps), so an allocation past it fails with PyTorch's
    "can't allocate memory" and the case is ``oom`` instead of the machine
    thrashing or the kernel's OOM killer firing. On CUDA the caching
    allocator's per-process memory fraction is set to what the process has
    reserved plus this much. The limit is lifted after the case.
    """

    case_timeout_s: float = 300.0
    memory_margin_mib: float = 1024.0  # CPU: skip a case whose estimate leaves less free
    memory_limit_mib: float | None = None  # cap on what one case may allocate (see above)


@dataclass(frozen=True)
class VariantSpec:
    name: str
    label: str
    params: dict[str, Any]
    overrides: dict[str, Any]  # per-variant defaults / grid keys
    line: int = 0


@dataclass(frozen=True)
class Case:
    """One measured configuration: a variant at one N, heads, device and dtype."""

    suite: str
    variant: str
    label: str
    params: dict[str, Any]
    batch: int
    seq_len: int
    heads: int
    dim: int
    dtype: str
    device: str
    causal: bool
    passes: tuple[str, ...]
    compile: bool = False
    timing: TimingSettings = field(default_factory=TimingSettings)
    limits: Limits = field(default_factory=Limits)
    round: int = 0  # which visit of the case this is (0 .. timing.rounds - 1); not part of its identity
    kv_heads: int | None = None  # key/value heads (grouped-query attention); None: heads
    decode_steps: int = DEFAULT_DECODE_STEPS  # one-token steps a decode pass times

    def __post_init__(self) -> None:
        if not self.kv_heads:
            object.__setattr__(self, "kv_heads", self.heads)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def case_id(self) -> str:
        """Stable identity of the case, used by --resume and compare (kv_heads only when
        fewer than heads, so that the identities of earlier runs stay as they were)."""
        kv = f"|kv={self.kv_heads}" if self.kv_heads != self.heads else ""
        return (f"{self.label}|N={self.seq_len}|H={self.heads}{kv}|dim={self.dim}|B={self.batch}"
                f"|{self.dtype}|{self.device}|causal={int(self.causal)}")

    @property
    def seed(self) -> int:
        """A fixed seed per case, so inputs repeat exactly run to run."""
        return zlib.crc32(self.case_id.encode())

    @property
    def series(self) -> tuple:
        """The case without N: cases of one series differ only in seq_len."""
        return tuple(getattr(self, name) for name in SERIES_FIELDS)

    @property
    def setting(self) -> tuple:
        """The case without its variant: the setting group a worker visits together."""
        return tuple(getattr(self, name) for name in SETTING_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passes"] = list(self.passes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        d = dict(d)
        d["passes"] = tuple(d["passes"])
        d["timing"] = TimingSettings(**d.get("timing", {}))
        d["limits"] = Limits(**d.get("limits", {}))
        return cls(**d)


def case_field(case: dict[str, Any], name: str) -> Any:
    """A field of a case as a record stores it; kv_heads is heads in records from
    before grouped-query heads existed."""
    if name == "kv_heads":
        return case.get("kv_heads") or case["heads"]
    return case[name]


def kv_heads_of(case: Case) -> dict[str, int]:
    """``{"kv_heads": n}`` for a build when the case has fewer key/value heads than
    heads, else nothing (a custom layer may take ``kv_heads`` as its own parameter)."""
    return {"kv_heads": case.kv_heads} if case.kv_heads != case.heads else {}


def setting_of(case: dict[str, Any]) -> tuple:
    """The setting group (``Case.setting``) of a case as a record stores it."""
    return tuple(case_field(case, name) for name in SETTING_FIELDS)


def series_of(case: dict[str, Any]) -> tuple:
    """The series key (``Case.series``) of a case as a record stores it."""
    return tuple(case_field(case, name) for name in SERIES_FIELDS)

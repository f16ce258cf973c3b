"""The skip policy: which cases not to run, judged from the cases of their
series (same everything but N) that finished before them.

A series runs from small to large N. Once one N ran out of memory, the larger
ones are skipped; on CPU a case whose extrapolated peak memory exceeds what is
free (after ``limits.memory_margin_mib``) is skipped too. With rounds, the
policy decides a case's first visit; its later visits follow that one.
"""

from __future__ import annotations

import math
from typing import Any

from attnbench.errors import AttnbenchError
from attnbench.model import MIB, Case, Status, kv_heads_of, series_of


def estimated_peak_mib(case: Case, previous: list[dict[str, Any]]) -> float | None:
    """Extrapolate the peak memory of ``case`` from finished cases of its series
    (same everything but N): the growth exponent is fitted from the last two
    points, or taken as 2 (quadratic, the worst of our variants) from one."""
    points = []
    for record in previous:
        c = record["case"]
        peaks = [p["peak_mem_mib"] for p in record.get("passes", [])
                 if p["status"] == Status.OK and p.get("peak_mem_mib") is not None]
        if peaks and c["seq_len"] < case.seq_len:
            points.append((c["seq_len"], max(peaks)))
    if not points:
        return None
    points.sort()
    n1, m1 = points[-1]
    exponent = 2.0
    if len(points) >= 2:
        n0, m0 = points[-2]
        if m0 > 0 and m1 > 0 and n1 > n0:
            exponent = min(max(math.log(m1 / m0) / math.log(n1 / n0), 1.0), 3.0)
    return m1 * (case.seq_len / n1) ** exponent * 1.2


_LARGEST: dict[tuple, float | None] = {}
BUILT_IN = "built-in"  # VariantInfo.origin of attnbench's own variants


def largest_tensor_mib(case: Case) -> float | None:
    """The largest tensor one forward pass of ``case`` creates, in MiB, from a
    run on the ``meta`` device (shapes only, nothing allocated): a lower bound
    of its peak memory, known before any case of its series ran (softmax's
    scores at N=131072 are 64 GiB per head). Built-in variants only: this runs
    in the sweep's own process, where a custom layer's forward (which may
    crash, hang or exit) must never run. None where the layer cannot run on
    ``meta``."""
    key = (case.variant, repr(sorted(case.params.items())), case.batch, case.seq_len, case.heads, case.kv_heads,
           case.dim, case.dtype, case.causal, case.passes == ("decode",))
    if key not in _LARGEST:
        _LARGEST[key] = _largest_on_meta(case)
    return _LARGEST[key]


def _largest_on_meta(case: Case) -> float | None:
    from attnbench.variants import build, variant_info

    if ":" in case.variant:  # an import path: a custom layer, never imported here
        return None
    try:
        if variant_info(case.variant).origin != BUILT_IN:
            return None
    except ValueError:  # not a variant this process knows: the worker says why
        return None
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel() * t.element_size())
            return out

    dtype = getattr(torch, case.dtype)
    try:
        with torch.device("meta"):
            layer = build(case.variant, dim=case.dim, heads=case.heads, seq_len=case.seq_len, causal=case.causal,
                          **kv_heads_of(case), **case.params).to(dtype)
            x = torch.empty(case.batch, case.seq_len, case.dim, dtype=dtype)
        with torch.no_grad(), Largest() as mode:
            if any(p != "decode" for p in case.passes):
                layer(x)
            else:  # decode alone needs the prompt's cache or state, not its forward
                layer.prefill(x, case.seq_len + case.decode_steps, output=False)
    except Exception:  # noqa: BLE001 - a layer with an op meta cannot run: no estimate
        return None
    return mode.largest / MIB


def device_unavailable(device: str) -> str | None:
    """Why cases on ``device`` cannot run on this machine (no CUDA, no such GPU); None when they can."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        return f"{device} does not exist (this machine has {torch.cuda.device_count()} GPUs)"
    return None


def skip_reason(case: Case, done: list[dict[str, Any]]) -> str | None:
    """Why ``case`` should not run, given the finished records ``done`` (one per
    visit); None to run it. A later visit follows the case's earlier ones: it
    runs when they all succeeded, and is skipped when one did not (a failure
    repeats, and a timeout would cost its limit in every round)."""
    unavailable = device_unavailable(case.device)
    if unavailable:
        return f"skipped: {unavailable}"
    earlier = [r for r in done if r.get("case_id") == case.case_id and r.get("round", 0) != case.round]
    if earlier:
        failed = [r for r in earlier if r["status"] not in (Status.OK, Status.SKIPPED)]
        if failed:
            first = min(failed, key=lambda r: r.get("round", 0))
            return f"skipped: its visit in round {first.get('round', 0) + 1} ended {first['status']}"
        ran = any(p["status"] == Status.OK for r in earlier for p in r.get("passes", []))
        if not ran:  # skipped whole: the reason holds for this visit too
            return next((r.get("error") for r in earlier if r.get("error")), None) or "skipped"
        return None  # some passes ran (others cannot run here): visit again
    key = case.series
    series = [r for r in done if series_of(r["case"]) == key]
    for record in series:
        if record["status"] == Status.OOM and record["case"]["seq_len"] < case.seq_len:
            return f"skipped: N={record['case']['seq_len']} of this series ran out of memory"
    if case.device == "cpu":
        return memory_skip_reason(case, series)
    return None


def memory_skip_reason(case: Case, series: list[dict[str, Any]] | None = None) -> str | None:
    """Why a CPU case would not fit in the memory free now (after the suite's
    margin): its peak extrapolated from the smaller N of its series, or at
    least its largest tensor; None when it may fit."""
    import psutil

    estimates = [e for e in (estimated_peak_mib(case, series or []), largest_tensor_mib(case)) if e is not None]
    available = psutil.virtual_memory().available / MIB - case.limits.memory_margin_mib
    if estimates and max(estimates) > available:
        return (f"skipped: estimated peak memory {max(estimates) / 1024:,.1f} GiB exceeds the available "
                f"{max(available, 0) / 1024:,.1f} GiB (after a "
                f"{case.limits.memory_margin_mib / 1024:,.1f} GiB margin)")
    return None


def unrunnable_warnings(cases: list[Case]) -> list[str]:
    """A warning per device this machine does not have; an error, before any
    run directory exists, when no case can run here (nothing would be measured)."""
    reasons = {d: device_unavailable(d) for d in dict.fromkeys(c.device for c in cases)}
    lost = {d: r for d, r in reasons.items() if r}
    if not lost:
        return []
    if len(lost) == len(reasons):
        devices = ", ".join(lost)
        raise AttnbenchError(f"{'; '.join(dict.fromkeys(lost.values()))}: no case of this suite can run here "
                             f"(it asks for {devices}); run it with --device cpu, or on a machine with a GPU")
    return [f"{sum(c.device == d for c in cases)} case(s) on {d} are skipped: {r}" for d, r in lost.items()]

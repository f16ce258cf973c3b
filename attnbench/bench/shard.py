"""Shards of a suite for batch schedulers (a SLURM array, any job queue).

``attnbench run SUITE --shard K/N`` runs the K-th of N disjoint parts of the
suite. A part is made of whole setting groups (all variants at one N, heads,
dim, batch, dtype, device and causal flag), so the paired ratios of a report
always compare cases measured in the same job on the same device. The parts
are balanced by an estimate of each group's time and are deterministic: every
job of an array computes the same split from the suite alone (never from the
machine it runs on, nor from what has finished), so the parts are disjoint
and together are the whole suite. ``attnbench merge`` puts them back together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from attnbench.errors import AttnbenchError
from attnbench.model import Case

#: What the cases of one setting group share: everything but the variant.

# Rough sustained rates, only to weigh groups against each other: a wrong
# rate moves the balance between devices, never the split's correctness.
_FLOPS_PER_S = {"cpu": 5e10, "cuda": 1e14}
_CASE_OVERHEAD_S = 0.3  # build the layer, the memory run, hand-over to the worker
_PASS_FACTOR = {"forward": 1, "backward": 2, "forward_backward": 3}


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N), with 1 <= K <= N; anything else is an error saying so."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise AttnbenchError(f"--shard {text!r}: expected K/N, e.g. --shard 2/8 for the second of 8 parts")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise AttnbenchError(f"--shard {text}: K must be between 1 and N (N >= 1), e.g. 1/{max(count, 1)}")
    return Shard(index, count)


def setting_groups(cases: Sequence[Case]) -> list[list[Case]]:
    """The cases grouped by setting (``Case.setting``), groups in the order
    their first case appears, cases in suite order within a group."""
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.setting, []).append(case)
    return list(groups.values())


def _forward_flops(case: Case) -> float:
    """Analytic FLOPs of one forward, from the layer built on the meta device
    (no memory, no computation); a quadratic guess when that is not possible
    (a custom layer that cannot be built there or has no ``flops``)."""
    try:
        import torch

        from attnbench.variants import build

        with torch.device("meta"):
            layer = build(case.variant, dim=case.dim, heads=case.heads, seq_len=case.seq_len, causal=case.causal,
                          **case.params)
        return float(layer.flops(case.batch, case.seq_len))
    except Exception:  # noqa: BLE001 - an estimate only: fall back to the worst common growth
        return 4.0 * case.batch * case.seq_len**2 * case.dim + 8.0 * case.batch * case.seq_len * case.dim**2


def estimated_seconds(case: Case) -> float:
    """How long ``case`` should take, roughly: per pass, warm-up and the
    samples at an assumed rate, but never under ``timing.min_time_s`` (the
    sampler keeps going until then)."""
    kind = "cuda" if case.device.startswith("cuda") else "cpu"
    one_forward = _forward_flops(case) / _FLOPS_PER_S[kind]
    timing = case.timing
    total = _CASE_OVERHEAD_S
    for name in case.passes:
        t = one_forward * _PASS_FACTOR.get(name, 1)
        samples = min(timing.max_reps, max(timing.min_reps, timing.min_time_s / t if t > 0 else timing.max_reps))
        total += (timing.warmup + 1 + samples) * t  # +1: the untimed memory run
    return total


def assign(costs: Sequence[float], count: int) -> list[list[int]]:
    """Longest processing time first: the costliest remaining item goes to
    the least loaded part (ties: the lower item, the lower part), so the split
    depends only on the costs. Returns the item indices of each part, in
    their original order."""
    loads = [0.0] * count
    parts: list[list[int]] = [[] for _ in range(count)]
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(count), key=lambda p: (loads[p], p))
        loads[target] += costs[item]
        parts[target].append(item)
    return [sorted(part) for part in parts]


def shard_units(units: Sequence[Sequence[Case]], shard: Shard,
                cost: Callable[[Case], float] = estimated_seconds) -> list[list[Case]]:
    """The units of part ``shard``: whole units, balanced by summed ``cost``."""
    costs = [sum(cost(case) for case in unit) for unit in units]
    return [list(units[i]) for i in assign(costs, shard.count)[shard.index - 1]]


def shard_cases(cases: Sequence[Case], shard: Shard,
                cost: Callable[[Case], float] = estimated_seconds) -> list[Case]:
    """The cases of part ``shard`` of ``cases`` (all of a suite's cases, not
    only the missing ones: the split must not depend on progress), in suite order."""
    chosen = {case.case_id for unit in shard_units(setting_groups(cases), shard, cost) for case in unit}
    return [case for case in cases if case.case_id in chosen]

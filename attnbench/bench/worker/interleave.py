"""Measure a work unit's cases together, sample by sample.

A work unit is one round of one setting group: every variant at one N,
heads, width, batch, dtype and device. Measured one case after another, each
case's samples sit at their own moment, and on a shared machine the speed
wanders between moments: on the 2-core VM this was built on, a block of 4
samples moved by 11% from the next block of the same layer, while one
sample moved 4% from the next. The ratio of two layers sampled in turn (A B
A B ...) had no such slow part: its spread fell as 1/sqrt(samples) (10% for
one pair, 2.5% for 16). So the variants of a unit are built together and,
pass by pass, sampled in turn, in a shuffled order every turn (seeded by the
unit: it repeats): their medians then come from the same moments, and what
a speed-up or a peer comparison divides out is the machine's wander.

Per pass: the peak memory of each case is measured alone (first visit
only), as before; then every case warms up; then turns of one sample each
until every case has ``min_reps`` samples and meets its own stopping rule
(IQR/median under ``target_rel_iqr``, or ``min_time_s`` spent in its
samples), or has ``max_reps``. Every case takes as many turns as the
slowest to settle needs, up to its ``max_reps``, so their samples span the
same moments. The backward pass keeps one retained graph per case while
they are sampled: if that runs out of memory, the pass falls back to timing
each case alone. A case that fails is reported as it would be alone, and the
others go on. ``at(i)`` tells the caller which case is running, so that a
worker that hangs or dies is blamed on the right case (``child.py``).

The k-th sample of every case comes from the k-th turn, so the ratio of two
cases can be taken turn by turn (``paired.round_log_ratio``): each pass
sampled in turns carries the unit visit's token (``turns``), and only
samples with the same token are paired that way.
"""

from __future__ import annotations

import random
import uuid
import zlib
from collections.abc import Callable, Sequence

import torch

from attnbench.bench.worker import timing
from attnbench.bench.worker.measure import (
    BuiltCase,
    is_oom,
    measure_memory,
    new_result,
    pass_functions,
    record_failure,
    release,
    start_case,
)
from attnbench.bench.worker.messages import Message, PassResult
from attnbench.model import Case, Status, TimingSettings
from attnbench.stats.samples import rel_iqr

#: Reports one case's message: (its index in the unit, the message).
EmitTo = Callable[[int, Message], None]


def unit_seed(cases: Sequence[Case]) -> int:
    """The seed of a unit's sampling order: the same cases and round, the same order."""
    return zlib.crc32("|".join(sorted(f"{c.case_id}#{c.round}" for c in cases)).encode())


def settled(samples: list[float], settings: TimingSettings) -> bool:
    """Whether a case's samples meet its stopping rule: ``timing.sample``'s,
    with ``min_time_s`` counted in the case's own samples (the turns share the
    clock)."""
    if len(samples) < min(settings.min_reps, settings.max_reps):
        return False
    return rel_iqr(samples) <= settings.target_rel_iqr or sum(samples) / 1e3 >= settings.min_time_s


class _TogetherOOM(Exception):
    """The cases' retained graphs did not fit together."""


def sample_in_turns(samplers: dict[int, Callable[[], float]], settings: dict[int, TimingSettings],
                    rng: random.Random, at: Callable[[int], None],
                    failed: Callable[[int, BaseException], None]) -> dict[int, list[float]]:
    """Warm up each sampler, then take one sample of each per turn, in a
    shuffled order, until every case is settled or at its ``max_reps``. A
    sampler that raises is reported through ``failed`` and leaves the turns;
    running out of memory with others alive raises ``_TogetherOOM``."""
    samples: dict[int, list[float]] = {i: [] for i in samplers}
    live = dict(samplers)

    def call(i: int) -> float | None:
        at(i)
        try:
            return live[i]()
        except Exception as exc:
            if is_oom(exc) and len(live) > 1:
                raise _TogetherOOM from exc
            failed(i, exc)
            del live[i]
            return None

    for i in list(live):
        for _ in range(settings[i].warmup):
            if i in live:
                call(i)
    while live:
        for i in rng.sample(sorted(live), len(live)):
            if i in live:
                elapsed = call(i)
                if elapsed is not None:
                    samples[i].append(elapsed)
        for i in [i for i in live if len(samples[i]) >= settings[i].max_reps]:
            del live[i]
        if all(settled(samples[i], settings[i]) for i in live):
            break
    return samples


def _time_alone(built: BuiltCase, pass_name: str, result: PassResult) -> None:
    try:
        with torch.enable_grad():
            _, sample_once = pass_functions(built, pass_name, result)
            result.samples_ms = timing.sample(sample_once, built.case.timing)
    except Exception as exc:  # noqa: BLE001 - the case's failure, reported as alone
        record_failure(result, exc)
    finally:
        sample_once = None
        release(built)


def _measure_pass(pass_name: str, members: dict[int, BuiltCase], rng: random.Random,
                  at: Callable[[int], None], token: str) -> dict[int, PassResult]:
    results = {i: new_result(built, pass_name) for i, built in members.items()}
    for i, built in members.items():  # memory alone: another case's graph must not count, nor crowd it out
        if built.case.round != 0:
            continue
        at(i)
        try:
            with torch.enable_grad():
                memory_region, _ = pass_functions(built, pass_name, results[i])
                measure_memory(results[i], memory_region, built.device)
        except Exception as exc:  # noqa: BLE001
            record_failure(results[i], exc)
        finally:
            memory_region = None
            release(built)
    ready = {i: b for i, b in members.items() if results[i].status == Status.OK}
    samplers: dict[int, Callable[[], float]] = {}
    together_oom = False
    try:
        with torch.enable_grad():
            for i, built in ready.items():
                at(i)
                try:
                    samplers[i] = pass_functions(built, pass_name, results[i])[1]
                except Exception as exc:
                    if is_oom(exc) and samplers:
                        raise _TogetherOOM from exc
                    record_failure(results[i], exc)
            samples = sample_in_turns(samplers, {i: ready[i].case.timing for i in samplers}, rng, at,
                                      lambda i, exc: record_failure(results[i], exc))
        for i, values in samples.items():
            if results[i].status == Status.OK:
                results[i].samples_ms = values
                results[i].turns = token
    except _TogetherOOM:
        together_oom = True  # handled below, once the exception and its frames are gone
    finally:
        samplers.clear()  # drops the retained graphs
        for built in members.values():
            release(built)
    if together_oom:
        for i, built in ready.items():
            if results[i].status == Status.OK:
                at(i)
                _time_alone(built, pass_name, results[i])
    return results


def run_unit(cases: Sequence[Case], emit: EmitTo, at: Callable[[int], None] = lambda i: None) -> None:
    """Measure ``cases`` (one unit, see ``interleavable``) together: per case a
    ``Meta`` or ``Failure`` once built, then per pass, once every case has
    done it, each case's ``PassResult``; each through ``emit(index, message)``."""
    built: dict[int, BuiltCase] = {}
    for i, case in enumerate(cases):
        at(i)
        one = start_case(case, lambda message, i=i: emit(i, message))
        if one is not None:
            built[i] = one
    rng = random.Random(unit_seed(cases))
    token = uuid.uuid4().hex[:16]  # this visit of the unit: its samples pair turn by turn
    passes = list(dict.fromkeys(p for case in cases for p in case.passes))
    for pass_name in passes:
        members = {i: b for i, b in built.items() if pass_name in b.case.passes}
        for i, result in _measure_pass(pass_name, members, rng, at, token).items():
            emit(i, result)

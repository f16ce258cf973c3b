"""Shards (``run --shard K/N``, attnbench.bench.shard): the parts are disjoint,
deterministic and whole setting groups."""

from __future__ import annotations

import pytest

from attnbench.bench.shard import (
    Shard,
    assign,
    estimated_seconds,
    parse_shard,
    setting_groups,
    shard_cases,
)
from attnbench.errors import AttnbenchError
from attnbench.suite import load as suite_mod
from tests.helpers import SHARDED_SUITE, SUITE_DIR, small_suite


@pytest.mark.parametrize("text,expected", [("1/3", Shard(1, 3)), (" 3 / 3 ", Shard(3, 3)), ("1/1", Shard(1, 1))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", ""])
def test_parse_shard_refuses_nonsense(text):
    with pytest.raises(AttnbenchError, match="--shard"):
        parse_shard(text)


def test_assign_is_disjoint_complete_and_balanced():
    costs = [7.0, 1.0, 3.0, 3.0, 9.0, 2.0, 2.0, 5.0, 0.5]
    parts = assign(costs, 3)
    assert sorted(i for part in parts for i in part) == list(range(len(costs)))
    loads = [sum(costs[i] for i in part) for part in parts]
    # Longest processing time first is within 4/3 of the best split, and never
    # more than one item above the mean.
    assert max(loads) <= sum(costs) / 3 + max(costs)
    assert max(loads) - min(loads) <= max(costs)
    assert assign(costs, 3) == parts  # deterministic
    assert assign(costs, 20)[-1] == []  # more parts than items: some are empty


@pytest.mark.slow
def test_gpu_suite_splits_into_whole_setting_groups():
    cases = suite_mod.load(SUITE_DIR / "gpu.yaml").cases()
    parts = [shard_cases(cases, Shard(k, 4)) for k in range(1, 5)]
    ids = [c.case_id for part in parts for c in part]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(set(ids)) == len(ids)
    owner = {}
    for k, part in enumerate(parts):
        for case in part:  # every case of a setting group is in the same part
            assert owner.setdefault(case.setting, k) == k
    loads = [sum(estimated_seconds(c) for c in part) for part in parts]
    heaviest_group = max(sum(estimated_seconds(c) for c in g) for g in setting_groups(cases))
    assert max(loads) - min(loads) <= heaviest_group
    # The order within a part is the suite's (a series from small to large N).
    order = {c.case_id: i for i, c in enumerate(cases)}
    assert all([order[c.case_id] for c in part] == sorted(order[c.case_id] for c in part) for part in parts)


def test_split_ignores_progress_and_machine():
    """The same suite always gives the same parts (each job computes its own)."""
    cases = suite_mod.parse(small_suite(**SHARDED_SUITE)).cases()
    first = [c.case_id for c in shard_cases(cases, Shard(2, 3))]
    again = [c.case_id for c in shard_cases(list(suite_mod.parse(small_suite(**SHARDED_SUITE)).cases()), Shard(2, 3))]
    assert first == again and first

"""The options that choose an executor (attnbench.bench.executors.spread): the
combinations that make no sense are refused."""

from __future__ import annotations

import pytest

from attnbench.bench.executors.spread import spread_options
from attnbench.errors import AttnbenchError


@pytest.mark.parametrize("kwargs,message", [
    ({"address": "auto"}, "--address is the Ray cluster"),
    ({"executor": "slurm"}, "choose local or ray"),
    ({"allow_shared_cpu": True}, "--allow-shared-cpu goes with --devices"),
    ({"devices": "cpu", "in_process": True}, "--in-process"),
    ({"devices": "cpu", "device": "cuda"}, "disagree"),
])
def test_conflicting_options_are_refused(kwargs, message):
    with pytest.raises(AttnbenchError, match=message):
        spread_options(**kwargs)

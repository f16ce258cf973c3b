"""The sweep's progress (attnbench.bench.progress): a bar on a terminal; off a
terminal, plain lines, one per visit, never a bar cut at 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from attnbench.bench.progress import Progress
from tests.helpers import record


def test_off_a_terminal_each_visit_is_one_plain_line():
    stream = io.StringIO()
    console = Console(file=stream, width=80, force_terminal=False)
    with Progress(3, quiet=False, rounds=2, console=console) as progress:
        assert progress.plain
        for rec in (record("softmax", 1024, {"forward": [1.0]}, rnd=0),
                    record("a-very-long-label-for-a-custom-layer", 1024, {"forward": "crashed"}, rnd=1)):
            progress.finished(rec)
    lines = stream.getvalue().splitlines()
    assert lines == ["visit 1/3 softmax N=1024 H=2 cpu float32 round 1/2: ok",
                     "visit 2/3 a-very-long-label-for-a-custom-layer N=1024 H=2 cpu float32 round 2/2: crashed"]


def test_quiet_off_a_terminal_prints_nothing():
    stream = io.StringIO()
    with Progress(1, quiet=True, console=Console(file=stream, force_terminal=False)) as progress:
        progress.finished(record("softmax", 64, {"forward": [1.0]}))
    assert stream.getvalue() == ""

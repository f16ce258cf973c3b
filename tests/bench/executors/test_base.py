"""Which units are measured together (attnbench.bench.executors.base.interleavable)."""

from __future__ import annotations

from dataclasses import replace

from attnbench.bench.executors.base import interleavable
from attnbench.model import Limits
from attnbench.suite import load as suite_mod
from tests.helpers import unit_of


def test_interleavable_units():
    cases = unit_of("[softmax, fastformer]")
    assert interleavable(cases)
    assert not interleavable(cases[:1])
    assert not interleavable([cases[0], replace(cases[1], device="cuda")])
    assert not interleavable([cases[0], replace(cases[1], timing=replace(cases[1].timing, interleave=False))])
    assert not interleavable([cases[0], replace(cases[1], limits=Limits(memory_limit_mib=256))])
    off = suite_mod.parse("name: s\ngrid: {seq_lens: [64], heads: [2]}\nvariants: [softmax, sdpa]\n"
                          "timing: {interleave: false}\n").cases()
    assert not any(c.timing.interleave for c in off)

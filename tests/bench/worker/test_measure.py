"""Measuring a case (attnbench.bench.worker.measure): the SDPA backend that ran is
recorded."""

import torch

import attnbench
from attnbench.bench.worker.measure import sdpa_backends_used


def test_sdpa_backend_that_ran_is_recorded():
    x = torch.randn(1, 64, 32)
    assert sdpa_backends_used(attnbench.build("sdpa", dim=32, heads=2, seq_len=64, backend="math"), x) == ["math"]
    if torch.backends.cpu.get_cpu_capability() != "NO AVX":  # the CPU flash kernel needs vector units
        auto = sdpa_backends_used(attnbench.build("sdpa", dim=32, heads=2, seq_len=64), x)
        assert auto in (["flash"], ["math"])

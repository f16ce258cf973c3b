import os

import pytest
import torch

# FlexAttention variants: the unfused reference path, so that every registry-wide
# test does not pay a torch.compile; tests/test_flex.py checks the compiled one.
os.environ.setdefault("ATTNBENCH_FLEX_EAGER", "1")
# A Ray cluster a test starts listens on loopback only (Ray reads this when it
# is imported; on Linux it otherwise binds every interface).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def qkv(batch: int = 2, heads: int = 2, n: int = 64, d: int = 16, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(batch, heads, n, d, generator=g, dtype=dtype) for _ in range(3))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny-tensor tests: a second thread
    only adds synchronisation, and on a busy shared machine waiting for it
    dominates the run time. The setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

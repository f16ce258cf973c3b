import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def qkv(batch: int = 2, heads: int = 2, n: int = 64, d: int = 16, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(batch, heads, n, d, generator=g, dtype=dtype) for _ in range(3))

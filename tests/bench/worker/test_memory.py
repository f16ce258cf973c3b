"""Peak memory (attnbench.bench.worker.memory): softmax holds its attention matrix,
readings repeat, and on CUDA the allocator's peak above the baseline."""

import pytest
import torch

import attnbench
from attnbench.bench.worker import memory, timing
from tests.helpers import FakeCuda


def _forward(layer, x):
    def region():
        with torch.inference_mode():
            return layer(x)
    return region


def test_softmax_peak_memory_holds_its_attention_matrix_and_sdpa_less():
    n, heads = 2048, 8
    x = torch.randn(1, n, 512)
    soft = attnbench.build("softmax", dim=512, heads=heads, seq_len=n)
    sdpa = attnbench.build("sdpa", dim=512, heads=heads, seq_len=n)
    matrix_mib = heads * n * n * 4 / 2**20  # 128 MiB of float32 scores
    soft_peak = memory.measure_peak(_forward(soft, x), torch.device("cpu")).peak_mib
    sdpa_peak = memory.measure_peak(_forward(sdpa, x), torch.device("cpu")).peak_mib
    assert soft_peak >= matrix_mib
    assert sdpa_peak < soft_peak / 4


def test_cpu_peak_memory_is_repeatable():
    layer = attnbench.build("softmax", dim=64, heads=2, seq_len=256)
    x = torch.randn(1, 256, 64)
    readings = {memory.measure_peak(_forward(layer, x), torch.device("cpu")).peak_mib for _ in range(3)}
    assert len(readings) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_memory_and_timing():
    device = torch.device("cuda")
    layer = attnbench.build("softmax", dim=512, heads=8, seq_len=2048).to(device)
    x = torch.randn(1, 2048, 512, device=device)
    reading = memory.measure_peak(_forward(layer, x), device)
    assert reading.peak_mib >= 128 and reading.reserved_mib is not None
    assert timing.timed(_forward(layer, x), device) > 0


def test_cuda_memory_is_the_allocator_peak_above_the_baseline(monkeypatch):
    from attnbench.bench.worker.memory import measure_peak

    fake = FakeCuda(monkeypatch)
    reading = measure_peak(lambda: fake.calls.append("region"), torch.device("cuda"))
    assert reading.peak_mib == 64.0 and reading.reserved_mib == 64.0
    # stats reset and baseline read before the pass, peaks read after it has finished
    assert fake.calls == ["synchronize", "reset_peak_memory_stats", "memory_allocated", "memory_reserved",
                          "region", "synchronize", "max_memory_allocated", "max_memory_reserved"]

"""The timing engine's stopping rules and statistics, and peak memory."""

import pytest
import torch

import attnbench
from attnbench.bench.worker import memory, timing
from attnbench.model import TimingSettings


def test_warmup_runs_are_not_samples_and_max_reps_caps():
    calls = []

    def once():
        calls.append(1)
        return float(len(calls) % 7 + 1)  # noisy: never under the IQR target

    samples = timing.sample(once, TimingSettings(warmup=4, min_time_s=100, max_reps=12, min_reps=3,
                                                 target_rel_iqr=0.0))
    assert len(samples) == 12 and len(calls) == 16


def test_stops_early_once_spread_is_under_target():
    samples = timing.sample(lambda: 5.0, TimingSettings(warmup=0, min_time_s=100, max_reps=50, min_reps=5,
                                                        target_rel_iqr=0.05))
    assert len(samples) == 5


def test_stops_when_min_time_is_spent():
    import itertools
    import time

    values = itertools.cycle([1.0, 3.0])  # IQR/median never under target

    def slow():
        time.sleep(0.01)
        return next(values)

    samples = timing.sample(slow, TimingSettings(warmup=0, min_time_s=0.08, max_reps=1000, min_reps=2,
                                                 target_rel_iqr=0.0))
    assert 2 <= len(samples) < 30


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

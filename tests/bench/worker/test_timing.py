"""The timing engine's stopping rules (attnbench.bench.worker.timing), and CUDA
timing with events, on a fake torch.cuda."""

import torch

from attnbench.bench.worker import timing
from attnbench.model import TimingSettings
from tests.helpers import FakeCuda


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


def test_cuda_timing_brackets_the_region_with_events_and_synchronisation(monkeypatch):
    from attnbench.bench.worker.timing import timed

    fake = FakeCuda(monkeypatch)
    ms = timed(lambda: fake.calls.append("region"), torch.device("cuda"))
    assert ms == 12.5  # the events' time, not the host's clock
    assert fake.calls == ["event:start", "event:end", "synchronize", "record:start", "region",
                          "record:end", "synchronize", "elapsed_time"]

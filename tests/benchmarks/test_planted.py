"""benchmarks/planted.py: the planted slowdown pads each forward and each
backward by the asked fraction of the layer's own time, and computes exactly
what its base layer computes."""

import importlib.util

import pytest
import torch

import attnbench
from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("planted", ROOT / "benchmarks" / "planted.py")
planted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(planted)


@pytest.mark.parametrize("extra", [0.0, 0.15])
def test_pads_forward_and_backward_by_the_fraction(monkeypatch, extra):
    asked = []
    monkeypatch.setattr(planted, "_pad", asked.append)
    ticks = iter(float(t) for t in range(100))
    monkeypatch.setattr(planted.time, "perf_counter", lambda: next(ticks))
    layer = planted.PlantedSlowdown(dim=32, heads=2, seq_len=64, base="softmax", extra=extra)
    x = torch.randn(1, 64, 32, requires_grad=True)
    y = layer(x)
    assert asked == [pytest.approx(extra * 1.0)]  # the fake clock ticks once across the layer
    y.backward(torch.ones_like(y))
    assert len(asked) == 2 and asked[1] == pytest.approx(extra * 1.0) and x.grad is not None


def test_computes_what_its_base_computes():
    torch.manual_seed(0)
    layer = planted.PlantedSlowdown(dim=32, heads=2, seq_len=64, base="fastformer", extra=0.0)
    torch.manual_seed(0)
    base = attnbench.build("fastformer", dim=32, heads=2, seq_len=64)
    x = torch.randn(1, 64, 32)
    with torch.inference_mode():
        assert torch.equal(layer(x), base(x))
    assert layer.flops(1, 64) == base.flops(1, 64)
    with pytest.raises(ValueError, match="extra"):
        planted.PlantedSlowdown(dim=32, heads=2, seq_len=64, extra=-0.1)


def test_padding_computes_for_the_time_asked(monkeypatch):
    """Until the clock has moved by the time asked, each reading of it follows a
    step of computation (not a sleep); no time asked, no work. The clock is
    faked (5 ms a reading): what is checked is the loop, not this machine."""
    ticks = iter(0.005 * k for k in range(1000))
    readings, steps = [], []

    def clock() -> float:
        readings.append(next(ticks))
        return readings[-1]

    tanh = torch.tanh
    monkeypatch.setattr(planted.time, "perf_counter", clock)
    monkeypatch.setattr(planted.torch, "tanh", lambda t: steps.append(readings[-1]) or tanh(t))
    planted._pad(0.02)
    assert readings[-1] - readings[0] >= 0.02 > readings[-2] - readings[0]  # stops once the time has passed
    assert steps == readings[1:-1]  # a step of work after every reading short of the end
    readings.clear()
    steps.clear()
    planted._pad(0.0)
    assert readings == [] and steps == []

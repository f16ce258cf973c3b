"""benchmarks/planted.py: the planted slowdown pads each forward and each
backward by the asked fraction of the layer's own time, and computes exactly
what its base layer computes."""

import importlib.util
from pathlib import Path

import pytest
import torch

import attnbench

_spec = importlib.util.spec_from_file_location("planted", Path(__file__).parent.parent / "benchmarks" / "planted.py")
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


def test_padding_computes_for_the_time_asked():
    import time

    t0 = time.perf_counter()
    planted._pad(0.02)
    assert time.perf_counter() - t0 >= 0.02
    planted._pad(0.0)

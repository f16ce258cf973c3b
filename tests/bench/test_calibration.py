"""Calibration (attnbench.bench.calibration): the matmul rate and copy bandwidth,
synchronised regions on CUDA, and the warnings when they drift."""

import pytest
import torch

from attnbench.bench import calibration
from attnbench.bench.calibration import calibrate, calibration_drift, drift, format_rate


def test_cpu_calibration_measures_both_figures_quickly():
    c = calibrate("cpu", "float32", target_s=0.002, repeats=2)
    assert "error" not in c
    assert c["matmul_flops"] > 1e6 and c["bandwidth_bytes_per_s"] > 1e6
    assert c["matmul_n"] == calibration.MATMUL_N["cpu"]
    assert c["device"] == "cpu" and c["dtype"] == "float32" and c["threads"] >= 1 and c["seconds"] > 0
    assert c["schema"] == calibration.CALIBRATION_SCHEMA


def test_the_matmul_size_is_fixed_and_the_products_fill_the_target(monkeypatch):
    seen = []

    def fake_region(fn, device, times=1):
        n = fn().shape[0]
        seen.append(n)
        return (n / 1024) ** 3 * 0.03 * times  # 1024 takes 30 ms

    monkeypatch.setattr(calibration, "_region_s", fake_region)
    out = calibration.matmul_rate(torch.device("cpu"), torch.float32, target_s=0.1, repeats=3)
    assert out["matmul_n"] == 1024 and out["matmul_per_region"] == 3
    assert out["matmul_flops"] == pytest.approx(2 * 1024**3 / 0.03)
    assert set(seen) == {1024}  # the same work whatever the load: start and end compare


def test_cuda_regions_are_synchronised(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    calibration._region_s(lambda: None, torch.device("cuda"), times=4)
    assert len(calls) == 2  # before and after the region, not per call
    calibration._region_s(lambda: None, torch.device("cpu"))
    assert len(calls) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu_is_a_message_not_an_exception():
    assert calibrate("cuda", "bfloat16")["error"] == "CUDA is not available on this machine"
    assert "unknown dtype" in calibrate("cpu", "int7")["error"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_calibration():
    c = calibrate("cuda", "bfloat16")
    assert "error" not in c and c["matmul_flops"] > 1e12 and c["bandwidth_bytes_per_s"] > 1e11
    assert c["device_name"]


def test_drift_warns_beyond_the_threshold_only():
    start = {"device": "cpu", "dtype": "float32", "matmul_flops": 50e9, "bandwidth_bytes_per_s": 15e9}
    assert calibration_drift(start, {**start, "matmul_flops": 42e9}) == []  # 19% either way
    warned = calibration_drift(start, {**start, "matmul_flops": 40e9})  # 25% slower: 1.25 times as long
    assert len(warned) == 1 and "matmul rate" in warned[0] and "-20%" in warned[0]
    assert "50 GFLOP/s -> 40 GFLOP/s" in warned[0]
    assert len(calibration_drift(start, {**start, "bandwidth_bytes_per_s": 20e9}, threshold=0.3)) == 1
    assert drift(100.0, 125.0) == drift(125.0, 100.0) == pytest.approx(0.25)
    assert drift(None, 1.0) is None and drift(0.0, 1.0) is None
    assert calibration_drift(start, {"error": "CUDA is not available"}) == []
    assert calibration_drift(None, start) == []
    assert format_rate("matmul_flops", 1.5e12) == "1.5 TFLOP/s" and format_rate("bw", None) == "—"

"""A run's figures against the machine's limits (attnbench.analysis.roofline):
the fraction of the matmul rate at the run's start, and of the best rate the
machine showed (start or end), beyond which a figure is impossible."""

import math

import pandas as pd
import pytest

from attnbench.analysis.roofline import best_rates, with_peak_fraction


def test_a_figure_is_impossible_only_beyond_the_best_rate_the_machine_showed():
    start = {"device": "cpu", "dtype": "float32", "matmul_flops": 50e9}
    meta = {"calibration": {"start": [start], "end": [{**start, "matmul_flops": 100e9}]}}
    assert best_rates(meta) == {("cpu", "float32"): 100e9}
    frame = pd.DataFrame({"device": ["cpu", "cpu"], "dtype": ["float32"] * 2, "tflops": [0.06, None]})
    assert with_peak_fraction(frame, meta)["peak_fraction"][0] == pytest.approx(1.2)  # over the start's: 120%
    best = with_peak_fraction(frame, meta, best=True)["peak_fraction"]
    assert best[0] == pytest.approx(0.6) and math.isnan(best[1])  # the machine reached 100 GFLOP/s at the end


def test_the_best_rate_counts_the_calibrations_between_rounds():
    start = {"device": "cpu", "dtype": "float32", "matmul_flops": 125e9}
    meta = {"calibration": {"start": [start], "rounds": [{**start, "matmul_flops": 172e9}, {**start, "error": "x"}],
                            "end": [{**start, "matmul_flops": 124e9}]}}
    assert best_rates(meta) == {("cpu", "float32"): 172e9}  # the VM's fast phase, caught between rounds

"""The serving figures: the decode columns of results.csv (tokens per step, the
bandwidth against the calibrated bound), the decode exponents, the crossovers
against the KV cache, labels that keep grouped-query cases apart."""

from __future__ import annotations

import pandas as pd
import pytest

from attnbench.analysis.serving import crossover_text, crossovers, decode_rows, decode_scaling, with_kv_labels
from attnbench.store.results import records_frame

GB = 1e9


def decode_record(variant: str, n: int, ms: float, cache_mib: float, step_bytes: int, kv_heads: int = 2,
                  heads: int = 8, batch: int = 1) -> dict:
    case = {"suite": "d", "variant": variant, "label": variant, "params": {}, "batch": batch, "seq_len": n,
            "heads": heads, "kv_heads": kv_heads, "dim": 1024, "dtype": "float32", "device": "cpu", "causal": True,
            "passes": ["decode"], "compile": False, "decode_steps": 16}
    kv = f"|kv={kv_heads}" if kv_heads != heads else ""
    return {"schema": 1, "case_id": f"{variant}|N={n}|H={heads}{kv}|dim=1024|B={batch}|float32|cpu|causal=1",
            "case": case, "status": "ok", "threads": 2,
            "passes": [{"pass": "decode", "status": "ok", "samples_ms": [ms] * 5, "cache_mib": cache_mib,
                        "step_bytes": step_bytes}]}


META = {"calibration": {"start": [{"device": "cpu", "dtype": "float32", "bandwidth_bytes_per_s": 20 * GB}],
                        "end": [{"device": "cpu", "dtype": "float32", "bandwidth_bytes_per_s": 25 * GB}]}}
NS = [1024, 4096, 16384]


def decode_frame() -> pd.DataFrame:
    records = []
    for n in NS:
        cache = 2 * n * 2 * 128 * 4  # keys and values, 2 heads of 128, float32
        weights = 10 * 2**20
        records.append(decode_record("sdpa", n, (cache + weights) / (12.5 * GB) * 1e3, cache / 2**20,
                                     cache + weights))
        records.append(decode_record("linear", n, 1.5, 3.0, weights))
    return records_frame(records, "r", META)


def test_decode_rows_carry_tokens_per_step_and_the_bandwidth_against_the_best_calibration() -> None:
    frame = decode_frame()
    sdpa = frame[frame["variant"] == "sdpa"].set_index("seq_len")
    assert sdpa.at[1024, "tokens_per_s"] == pytest.approx(1 / (sdpa.at[1024, "median_ms"] / 1e3))
    assert sdpa.at[4096, "bandwidth_gbs"] == pytest.approx(12.5)
    assert sdpa.at[4096, "bandwidth_pct"] == pytest.approx(50.0)  # of 25 GB/s, the end's (the higher)
    assert (frame["kv_heads"] == 2).all() and (frame["decode_steps"] == 16).all()


def test_without_a_calibration_there_is_no_percentage() -> None:
    frame = records_frame([decode_record("sdpa", 1024, 1.0, 1.0, 10**6)], "r", {})
    assert frame["bandwidth_gbs"].iloc[0] == pytest.approx(1.0) and pd.isna(frame["bandwidth_pct"].iloc[0])


def test_decode_exponents_tell_a_cache_from_a_state() -> None:
    fits = {s.label: s for s in decode_scaling(decode_frame())}
    assert fits["linear kv2"].time_exponent == pytest.approx(0.0, abs=1e-9)
    assert fits["linear kv2"].cache_exponent == pytest.approx(0.0, abs=1e-9)
    assert fits["sdpa kv2"].cache_exponent == pytest.approx(1.0)
    assert 0.3 < fits["sdpa kv2"].time_exponent < 1.0  # the weights are a fixed part of every step
    step_us = (2 * 1024 * 2 * 128 * 4 + 10 * 2**20) / (12.5 * GB) * 1e6
    assert fits["sdpa kv2"].fixed_us == pytest.approx(step_us / 2)  # at 50% of its bound: half the step is beyond


def test_the_crossover_is_interpolated_between_the_n_that_bracket_it() -> None:
    (cross,) = crossovers(decode_frame())
    assert cross.label == "linear kv2" and cross.reference == "sdpa kv2"
    # sdpa's step, (2 KiB·N + 10 MiB) / 12.5 GB/s, is 1.01 ms at 1K and 1.51 ms at 4K: linear's 1.5 ms
    # overtakes it just below 4K. Its 3 MiB state is smaller than the cache (2 KiB·N) from N = 1536.
    assert cross.time_side is None and 3500 < cross.time_n < 4096
    assert cross.memory_side is None and cross.memory_n == pytest.approx(1536)
    assert crossover_text(None, "above", (1024, 16384)) == "> 16,384"


def test_grouped_query_cases_are_labelled_apart_and_mha_cases_are_not() -> None:
    frame = pd.DataFrame({"label": ["sdpa", "sdpa"], "heads": [8, 8], "kv_heads": [8, 2]})
    assert list(with_kv_labels(frame)["label"]) == ["sdpa", "sdpa kv2"]
    plain = pd.DataFrame({"label": ["sdpa"], "heads": [8], "kv_heads": [8]})
    assert with_kv_labels(plain) is plain
    assert list(decode_rows(decode_frame())["label"].unique()) == ["linear kv2", "sdpa kv2"]


def test_compare_keeps_grouped_query_cases_apart() -> None:
    from attnbench.analysis.two_runs import compare_run_visits

    records = [decode_record("sdpa", 1024, 1.0, 1.0, 10**6, kv_heads=kv) for kv in (8, 2)]
    table, _ = compare_run_visits(records, records)
    assert sorted(table["label"]) == ["sdpa", "sdpa kv2"]

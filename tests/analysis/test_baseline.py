"""Each variant against a baseline (attnbench.analysis.baseline): quartiles from the
raw samples, and paired speed-ups with intervals from visit records."""

import math

import numpy as np
import pytest

from attnbench.analysis.baseline import add_quartiles, paired_table
from attnbench.store.visits import merge_visits
from tests.helpers import frame_of, record, two_variant_run


def test_quartiles_from_raw_samples():
    frame = frame_of({"softmax": [2.0]}, ns=[256])
    records = [{"case_id": "softmax|N=256", "passes": [
        {"pass": "forward_backward", "status": "ok", "samples_ms": [1.0, 2.0, 3.0, 4.0, 5.0]}]}]
    out = add_quartiles(frame, records)
    assert out["q1_ms"].iloc[0] == pytest.approx(2.0) and out["q3_ms"].iloc[0] == pytest.approx(4.0)
    assert math.isnan(add_quartiles(frame, [])["q1_ms"].iloc[0])


def test_paired_speed_ups_recover_the_truth_with_intervals():
    rng = np.random.default_rng(0)
    table = paired_table(two_variant_run(rng, 5), "softmax").set_index(["label", "seq_len"])
    for n in (64, 128, 256, 512):
        row = table.loc[("linear", n)]
        assert row["speedup"] == pytest.approx(4.0, rel=0.02)
        assert row["speedup_low"] <= 4.0 <= row["speedup_high"] and row["speedup_method"] == "t-rounds"
        assert row["rounds"] == 5 and row["mem_ratio"] == pytest.approx(0.25)
        assert row["mem_ratio_low"] == row["mem_ratio_high"]
        base = table.loc[("softmax", n)]
        assert base["speedup"] == 1.0 and base["speedup_method"] == "exact"


def test_speed_ups_pair_turn_by_turn_only_visits_that_took_the_same_turns():
    """Two rounds with the machine's speed moving between turns: where both
    visits carry the same turns token the speed-up is exact; a visit from
    another unit (another token, or none: a run made before tokens, or timed
    alone) falls back to the ratio of medians."""
    moments = [1.0, 1.1, 1.0, 2.0, 1.9]  # the variant left after three turns, before the slow ones
    base, fast = [4.0 * m for m in moments], moments[:3]

    def run(tokens: tuple) -> list[dict]:
        out = []
        for rnd in range(2):
            for label, samples, token in (("softmax", base, tokens[0]), ("linear", fast, tokens[1])):
                rec = record(label, 64, {"forward": samples}, rnd=rnd)
                if token is not None:
                    rec["passes"][0]["turns"] = f"{token}{rnd}"
                out.append(rec)
        return merge_visits(out)

    same = run(("u", "u"))
    assert same[0]["passes"][0]["rounds_turns"] == ["u0", "u1"]
    assert paired_table(same, "softmax").set_index("label").loc["linear", "speedup"] == pytest.approx(4.0)
    medians = float(np.median(base) / np.median(fast))
    for tokens in (("u", "v"), (None, None), ("u", None)):
        table = paired_table(run(tokens), "softmax").set_index("label")
        assert table.loc["linear", "speedup"] == pytest.approx(medians), tokens
    assert medians != pytest.approx(4.0, rel=0.05)

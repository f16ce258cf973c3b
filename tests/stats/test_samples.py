"""Statistics of timing samples (attnbench.stats.samples)."""

import pytest

from attnbench.stats.samples import summarize as summary_of


def test_summary_statistics():
    stats = summary_of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["samples"] == 5
    assert stats["iqr_ms"] == pytest.approx(2.0)
    assert stats["mean_ms"] == pytest.approx(22.0)
    assert summary_of([])["median_ms"] is None

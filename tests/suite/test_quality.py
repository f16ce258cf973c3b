"""The suite's ``quality:`` section (attnbench.suite.quality): validated and read,
each mistake named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.errors import SuiteError
from attnbench.suite import load as suite_mod
from tests.helpers import QUALITY_SUITE, write_quality_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_section_is_validated_and_read(tmp_path: Path) -> None:
    suite = suite_mod.load(write_quality_suite(tmp_path))
    q = suite.quality
    assert q.measures == ("approx", "mqar") and q.mqar.steps == 4 and q.mqar_seeds == (0, 1)
    assert q.mqar_params == {"local-w8": {"window": 2}} and q.approx.regimes == ("gaussian", "peaked")
    assert suite_mod.load(write_quality_suite(tmp_path), quick=True).quality.measures == ("approx",)
    assert "quality" in suite.fingerprint()
    assert suite_mod.parse("grid: {seq_lens: [8], heads: [1]}\nvariants: [softmax]\n").quality is None


@pytest.mark.parametrize(("change", "where"), [
    (("regimes: [gaussian, peaked]", "regimes: [uniform]"), "quality.approx.regimes[0]"),
    (("steps: 4", "stpes: 4"), "quality.mqar.stpes"),
    (("window: 2}", "windw: 2}"), "quality.mqar.params.local-w8.windw"),
    (("local-w8: {", "local: {"), "quality.mqar.params.local"),
    (("pairs: 2", "pairs: 5"), "quality.mqar"),
    (("measures: [approx]", "measures: [speed]"), "quick.quality.measures[0]"),
])
def test_a_mistake_names_its_key(tmp_path: Path, change: tuple[str, str], where: str) -> None:
    text = QUALITY_SUITE.replace(*change)
    assert text != QUALITY_SUITE
    with pytest.raises(SuiteError) as info:
        suite_mod.load(write_quality_suite(tmp_path, text), quick=where.startswith("quick."))
    assert info.value.key == where and info.value.line

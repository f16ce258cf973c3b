"""The serving part of the markdown report (attnbench.report.serving), read from
the committed decode reference run."""

from attnbench.report.build import build_report
from attnbench.report.markdown import markdown_report
from tests.helpers import ROOT


def test_decode_cells_are_escaped_once_in_markdown():
    text = markdown_report(build_report(ROOT / "results" / "reference-cpu" / "decode"))
    section = text[text.index("## decode"):]
    assert "| &lt; 1,024 |" in section  # a crossover below the range, as markdown shows '<'
    assert "&amp;" not in section

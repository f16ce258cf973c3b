"""The variant catalogue (attnbench.report.catalog): every built-in parameter has a
meaning, read from the variant docstring's Parameters: section."""

import pytest

from attnbench.report.catalog import parameter_meanings, parameter_rows
from attnbench.variants import variant_info, variant_names


@pytest.mark.parametrize("name", [n for n in variant_names() if variant_info(n).origin == "built-in"])
def test_every_built_in_parameter_has_a_meaning(name: str):
    # One source: the variant docstring's "Parameters:" section.
    assert all(row["meaning"] for row in parameter_rows(name)), name


def test_parameters_section_parsing():
    doc = "Title.\n\nParameters:\n    a: first\n       continued\n    b: second\n\nNotes."
    assert parameter_meanings(doc) == {"a": "first continued", "b": "second"}
    assert parameter_meanings("No section.") == {}

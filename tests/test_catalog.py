"""`attnbench list`: a table that fits 80 columns, and one variant in full with
its parameters' types, defaults, choices and meanings (issue 18, item 7)."""

import json

import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app
from attnbench.report.catalog import parameter_meanings, parameter_rows
from attnbench.variants import variant_info, variant_names

runner = CliRunner()


def test_list_fits_80_columns_without_cutting_a_word():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    assert all(name in result.stdout for name in variant_names())


def test_list_name_shows_one_variant_in_full():
    result = runner.invoke(app, ["list", "linformer"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    text = result.stdout
    assert "2006.04768" in text and "Linformer" in text and "fastformer" not in text
    assert "k" in text and "int" in text and "256" in text and "projected length" in text
    result = runner.invoke(app, ["list", "synthesizer"], env={"COLUMNS": "200"})
    assert "one of 'dense', 'random', 'factorized'" in result.stdout


def test_list_an_unknown_name_is_exit_2():
    result = runner.invoke(app, ["list", "lnformer"])
    assert result.exit_code == 2 and "linformer" in result.output


def test_list_json_carries_the_parameters():
    payload = json.loads(runner.invoke(app, ["list", "strided", "--json"]).stdout)
    (strided,) = payload["variants"]
    (stride,) = strided["parameters"]
    assert stride["type"] == "int or None" and stride["default"] == "None" and "√N" in stride["meaning"]


@pytest.mark.parametrize("name", [n for n in variant_names() if variant_info(n).origin == "built-in"])
def test_every_built_in_parameter_has_a_meaning(name: str):
    # One source: the variant docstring's "Parameters:" section.
    assert all(row["meaning"] for row in parameter_rows(name)), name


def test_parameters_section_parsing():
    doc = "Title.\n\nParameters:\n    a: first\n       continued\n    b: second\n\nNotes."
    assert parameter_meanings(doc) == {"a": "first continued", "b": "second"}
    assert parameter_meanings("No section.") == {}

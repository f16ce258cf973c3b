"""--help says what each option takes, with no <bool> on flags, plain
metavars and the defaults; `attnbench help` works (issue 18, item 8)."""

import pytest
from typer.testing import CliRunner

from attnbench.cli.app import app

runner = CliRunner()
COMMANDS = ["run", "report", "compare", "list", "validate", "runs", "schema", "env"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_plain_metavars_and_no_types_on_flags(command: str):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    text = result.stdout
    for noise in ("<bool>", "<path>", "<str>", "list[", "{", "[["):
        assert noise not in text, (command, noise)


def test_defaults_and_both_compare_modes_are_in_the_help():
    text = " ".join(runner.invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).stdout.replace("│", "").split())
    assert "[default: results]" in text and "[default: the suite's devices]" in text
    text = " ".join(runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).stdout.split())
    assert "One run: each variant against a baseline. Two runs: RUN_B against RUN_A" in text


def test_help_command():
    result = runner.invoke(app, ["help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0 and "Commands" in result.stdout
    result = runner.invoke(app, ["help", "compare"], env={"COLUMNS": "100"})
    assert result.exit_code == 0 and "--fail-above" in result.stdout
    result = runner.invoke(app, ["help", "rnu"])
    assert result.exit_code == 2 and "Did you mean 'run'?" in result.output

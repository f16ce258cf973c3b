"""Help (attnbench.cli.help): --help says what each option takes, with no <bool>
on flags, plain metavars and the defaults, and shows an example; `attnbench help`;
--version; shell completion."""

from __future__ import annotations

import pytest
import typer
import typer.completion
from typer.testing import CliRunner

import attnbench
from attnbench.cli.app import app
from tests.helpers import words

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


def test_compare_help_does_not_promise_softmax_as_the_default():
    result = runner.invoke(app, ["compare", "--help"])
    assert "default softmax" not in words(result.output).lower()


def test_version():

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"attnbench {attnbench.__version__}"


def test_every_command_help_shows_an_example():
    commands = typer.main.get_command(app).commands
    assert {"run", "report", "compare", "list", "validate", "env"} <= set(commands)
    for name in commands:
        result = runner.invoke(app, [name, "--help"], prog_name="attnbench", terminal_width=120)
        assert result.exit_code == 0
        examples = [line for line in result.stdout.splitlines() if "Example:" in line]
        assert examples and f"attnbench {name}" in examples[0], (name, result.stdout)


@pytest.mark.parametrize(("shell", "marker"), [("bash", "_ATTNBENCH_COMPLETE=complete_bash"),
                                               ("zsh", "#compdef attnbench")])
def test_show_completion_prints_the_script_for_the_users_shell(monkeypatch, shell: str, marker: str):
    # `attnbench --show-completion` detects the shell from the process tree
    # (shellingham); a test's parent is whatever ran pytest, so it is pinned here.
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: shell)
    script = runner.invoke(app, ["--show-completion"], prog_name="attnbench")
    assert script.exit_code == 0, (script.output, script.exception)
    assert marker in script.stdout


def test_shell_completion_completes_commands_and_options():
    env = {"_ATTNBENCH_COMPLETE": "complete_bash", "COMP_WORDS": "attnbench li", "COMP_CWORD": "1"}
    assert runner.invoke(app, [], prog_name="attnbench", env=env).stdout.split() == ["list"]
    env = {"_ATTNBENCH_COMPLETE": "complete_bash", "COMP_WORDS": "attnbench list --j", "COMP_CWORD": "2"}
    assert runner.invoke(app, [], prog_name="attnbench", env=env).stdout.split() == ["--json"]

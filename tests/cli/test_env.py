"""``attnbench env``: the table and the warnings, and --json."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from attnbench.bench import environment as env_mod
from attnbench.cli.app import app
from tests.helpers import ENVIRONMENT_KEYS

runner = CliRunner()


def test_env_command_prints_the_table_and_the_warnings(monkeypatch: pytest.MonkeyPatch, quiet_machine):
    monkeypatch.setattr(env_mod, "governors", lambda: ["powersave"])
    result = runner.invoke(app, ["env"], terminal_width=200)
    assert result.exit_code == 0
    for label in ("python", "torch", "CUDA", "cuDNN", "CPU cores", "torch threads", "SDPA backends"):
        assert label in result.stdout
    assert "8 physical, 8 logical, 8 usable" in result.stdout
    assert "governor is powersave" in result.stderr and "governor is" not in result.stdout


def test_env_json_is_the_run_json_environment_with_a_schema(quiet_machine):
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["schema"] == 1 and ENVIRONMENT_KEYS <= set(payload["environment"])

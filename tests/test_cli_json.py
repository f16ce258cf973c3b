"""Machine-readable output (--json on list, env, report, compare), the
examples in every --help, and shell completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
import typer.completion
from torch import nn
from typer.testing import CliRunner

import attnbench
from attnbench.cli.app import app
from attnbench.cli.console import JSON_SCHEMA
from attnbench.store.results import CSV_COLUMNS
from attnbench.variants.registry import unregister

runner = CliRunner()

SUITE = """\
name: json
baseline: softmax
defaults: {batch: 1, dim: 32, passes: [forward, backward]}
grid: {seq_lens: [16, 32], heads: [2]}
variants:
  - softmax
  - sdpa
  - t-json-broken
timing: {warmup: 0, min_time_s: 0.001, max_reps: 2, min_reps: 1}
"""


class _Broken(nn.Module):
    """Returns half the width: its cases end in 'error'."""

    def __init__(self, dim: int, heads: int, seq_len: int, causal: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def strict_json(text: str) -> dict:
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("json")
    (root / "s.yaml").write_text(SUITE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    attnbench.register("t-json-broken", family="custom")(_Broken)
    try:
        result = runner.invoke(app, ["run", str(root / "s.yaml"), "--out", str(root / "res"), "--in-process", "-q"])
    finally:
        unregister("t-json-broken")
        torch.set_num_threads(threads)
    assert result.exit_code == 3, result.output
    (path,) = (root / "res").iterdir()
    return path


def test_list_json(monkeypatch):
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    payload = strict_json(result.stdout)
    assert payload["schema"] == JSON_SCHEMA
    names = [v["name"] for v in payload["variants"]]
    assert names == attnbench.variant_names()
    softmax = payload["variants"][names.index("softmax")]
    assert {"family", "paper", "complexity", "causal", "defaults", "origin"} <= set(softmax)
    assert softmax["origin"] == "built-in"


def test_report_json_has_the_tidy_rows(run_dir: Path):
    result = runner.invoke(app, ["report", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    payload = strict_json(result.stdout)
    assert payload["schema"] == JSON_SCHEMA and payload["run_id"] == run_dir.name
    assert payload["columns"] == CSV_COLUMNS
    rows = payload["rows"]
    assert len(rows) == 3 * 2 * 2 and all(list(r) == CSV_COLUMNS for r in rows)
    ok = [r for r in rows if r["label"] == "softmax"]
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and isinstance(r["flops"], int) for r in ok)
    broken = [r for r in rows if r["label"] == "t-json-broken"]
    assert all(r["status"] == "error" and r["median_ms"] is None and r["flops"] is None for r in broken)
    assert broken[0]["error"].startswith("_Broken returned shape (1, 16, 16), expected (1, 16, 32)")


def test_compare_json_has_speedup_and_memory_ratio_rows(run_dir: Path):
    result = runner.invoke(app, ["compare", str(run_dir), "--json", "--pass", "forward"])
    assert result.exit_code == 0, result.output
    payload = strict_json(result.stdout)
    assert payload["baseline"] == "softmax" and payload["passes"] == ["forward"]
    rows = {(r["label"], r["seq_len"]): r for r in payload["rows"]}
    assert len(rows) == 6
    for key in ("label", "heads", "seq_len", "pass", "median_ms", "speedup", "mem_ratio", "baseline_ms"):
        assert key in rows[("sdpa", 16)]
    assert rows[("softmax", 32)]["speedup"] == pytest.approx(1.0)
    sdpa = rows[("sdpa", 32)]  # paired by round: its geometric mean over rounds, within its 95% interval
    assert sdpa["speedup_low"] <= sdpa["speedup"] <= sdpa["speedup_high"]
    assert sdpa["speedup_method"] in ("t-rounds", "bootstrap-samples", "exact") and sdpa["rounds"] >= 1
    assert rows[("t-json-broken", 16)]["speedup"] is None
    both = strict_json(runner.invoke(app, ["compare", str(run_dir), "--json", "--baseline", "sdpa"]).stdout)
    assert both["baseline"] == "sdpa" and set(both["passes"]) == {"forward", "backward"}


def test_json_errors_go_to_stderr_with_exit_2(tmp_path: Path):
    for command in ("report", "compare"):
        result = runner.invoke(app, [command, str(tmp_path / "missing"), "--json"])
        assert result.exit_code == 2 and result.stdout == "" and "error" in result.stderr


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

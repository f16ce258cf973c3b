"""``attnbench list``: a table that fits 80 columns, one variant in full with its
parameters' types, defaults, choices and meanings, --json, import paths."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import attnbench
import attnbench.variants
from attnbench.cli.app import app
from attnbench.cli.console import JSON_SCHEMA
from attnbench.variants import variant_names
from tests.helpers import CUSTOM_LAYERS, SUITE_DIR, strict_json, write_module

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


def test_list_and_validate():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "fastformer" in result.stdout
    result = runner.invoke(app, ["list", "fastformer"])
    assert result.exit_code == 0 and "2108.09084" in result.stdout
    data = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    assert data["schema"] == 1 and any(v["name"] == "softmax" for v in data["variants"])
    quick = SUITE_DIR / "quick.yaml"
    result = runner.invoke(app, ["validate", str(quick)])
    assert result.exit_code == 0 and "ok" in result.stdout


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


def test_list_imports_the_paths_it_is_given(workdir: Path):
    write_module(workdir, "userpkg.attention", CUSTOM_LAYERS)
    result = runner.invoke(app, ["list", "userpkg.attention:Attention", "--json"])
    assert result.exit_code == 0, result.output
    (mine,) = [v for v in json.loads(result.stdout)["variants"] if v["name"] == "userpkg.attention:Attention"]
    assert (mine["origin"], mine["family"], mine["defaults"]) == ("import path", "custom", {"scale": 1.0})
    result = runner.invoke(app, ["list", "userpkg.attention:Atention"])
    assert result.exit_code == 2 and "Did you mean 'Attention'?" in result.stderr


def test_a_custom_class_without_a_docstring_says_no_description(tmp_path, monkeypatch):
    write_module(tmp_path, "nodoc_layer", "import torch\n\n\nclass NoDoc(torch.nn.Module):\n"
                 "    def __init__(self, dim, heads, seq_len, causal=False):\n        super().__init__()\n"
                 "        self.proj = torch.nn.Linear(dim, dim)\n\n    def forward(self, x):\n"
                 "        return self.proj(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = runner.invoke(app, ["list", "nodoc_layer:NoDoc"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "no description" in result.stdout and "Base class for all neural network modules" not in result.stdout
    assert ", ," not in result.stdout.splitlines()[0]
